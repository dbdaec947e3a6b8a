//! Replays the checked-in `fuzz/corpus/rows` seeds through the fuzz target's body, so CI
//! exercises it on stable Rust without libFuzzer, and checks that each seed still means what it
//! was written for: valid rows parse, broken ones are refused.

use std::path::PathBuf;

use rosguard_routeros::fuzzing::{rows, RowsSummary};

fn seed(name: &str) -> RowsSummary {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/rows")
        .join(name);
    rows(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn rows_corpus_replays_and_each_seed_means_what_it_says() {
    for name in [
        "combined_v4",
        "separate_v4",
        "icmp",
        "v6_bare",
        "v6_brackets",
    ] {
        let s = seed(name);
        assert!(s.replies >= 1 && s.connections >= 1, "{name}: {s:?}");
    }
    let s = seed("list_entries");
    assert!(s.entries >= 1, "list_entries: {s:?}");
    for name in ["bad_counter", "missing_fields"] {
        let s = seed(name);
        assert!(
            s.replies >= 1 && s.connections == 0 && s.refused >= 1,
            "{name}: {s:?}"
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/rows");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        rows(&std::fs::read(entry.expect("corpus entry").path()).expect("corpus file"));
        count += 1;
    }
    assert!(
        count >= 8,
        "expected the seed corpus in {}, found {count} files",
        dir.display()
    );
}
