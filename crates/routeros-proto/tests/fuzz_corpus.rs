//! Replays the checked-in `fuzz/corpus/decode` seeds through the fuzz target's body, so CI
//! exercises it on stable Rust without libFuzzer.

use std::path::PathBuf;

#[test]
fn decode_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        routeros_proto::fuzzing::decode_round_trip(&data);
        count += 1;
    }
    assert!(
        count >= 10,
        "expected the seed corpus in {}, found {count} files",
        dir.display()
    );
}
