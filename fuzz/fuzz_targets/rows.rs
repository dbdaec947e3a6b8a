//! Fuzz target: arbitrary bytes through the decoder into rosguard's checked row types.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rosguard_routeros::fuzzing::rows(data);
});
