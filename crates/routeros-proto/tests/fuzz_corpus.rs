//! Replays the checked-in `fuzz/corpus/decode` seeds through the fuzz target's body, so CI
//! exercises it on stable Rust without libFuzzer, and checks that each seed still means what it
//! was written for: valid streams decode into replies, hostile ones into nothing.

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode")
}

fn seed(name: &str) -> (usize, usize) {
    let path = dir().join(name);
    routeros_proto::fuzzing::decode_round_trip(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

#[test]
fn decode_corpus_replays_and_each_seed_means_what_it_says() {
    for name in [
        "binary_value",
        "cancel_tail",
        "done",
        "empty_done",
        "fatal",
        "ipv6_row",
        "login_challenge",
        "long_word_2byte",
        "long_word_3byte",
        "row_separate_ports",
        "row_tag_first",
        "trap_unknown",
    ] {
        let (sentences, replies) = seed(name);
        assert!(
            sentences >= 1 && replies >= 1,
            "{name}: {sentences} sentences, {replies} replies"
        );
    }
    for name in ["control_byte", "hostile_prefix", "truncated"] {
        assert_eq!(seed(name).0, 0, "{name} must not decode");
    }
    // A sentence ended by a non-minimal zero length decodes (and re-encodes equal); its first
    // word is no reply word. An unknown reply word likewise decodes and is refused.
    for name in ["long_form_terminator", "unknown_reply"] {
        let (sentences, replies) = seed(name);
        assert!(
            sentences >= 1 && replies < sentences,
            "{name}: {sentences} sentences, {replies} replies"
        );
    }
    let mut count = 0;
    for entry in std::fs::read_dir(dir()).unwrap_or_else(|e| panic!("{}: {e}", dir().display())) {
        let path = entry.expect("corpus entry").path();
        routeros_proto::fuzzing::decode_round_trip(&std::fs::read(&path).expect("corpus file"));
        count += 1;
    }
    assert!(
        count >= 10,
        "expected the seed corpus in {}, found {count} files",
        dir().display()
    );
}
