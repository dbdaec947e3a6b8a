//! Replays the checked-in `fuzz/corpus/rows` seeds through the fuzz target's body, so CI
//! exercises it on stable Rust without libFuzzer.

use std::path::PathBuf;

#[test]
fn rows_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/rows");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.expect("corpus entry").path()).expect("corpus file");
        rosguard_core::fuzzing::rows(&data);
        count += 1;
    }
    assert!(
        count >= 8,
        "expected the seed corpus in {}, found {count} files",
        dir.display()
    );
}
