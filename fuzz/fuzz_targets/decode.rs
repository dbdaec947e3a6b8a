//! Fuzz target: arbitrary bytes through the RouterOS sentence decoder and reply parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = routeros_proto::fuzzing::decode_round_trip(data);
});
