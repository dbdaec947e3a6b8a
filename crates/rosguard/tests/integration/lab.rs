//! The real-traffic lab (`lab/run score`, see lab/README.md): real clients, servers and an
//! ISP's DPI in network namespaces, the kernel's own conntrack served as a RouterOS router,
//! `rosguard run` with default settings. Every labelled class must get its verdict, and the
//! blocked destinations must really be unreachable while normal ones stay reachable.
//!
//! Needs root, network namespaces, iproute2, nftables, conntrack, nmap and openssl (`.ci/run`
//! installs them); it fails, naming what is missing, where they are not.

use std::process::Command;

#[test]
fn every_lab_class_gets_its_verdict_with_default_settings() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("lab/run"))
        .args(["score", "--out"])
        .arg(work.path())
        .current_dir(&repo)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "lab/run score failed (it needs root, network namespaces, iproute2, nftables, conntrack, nmap and openssl):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.path().join("scorecard.json")).expect("the scorecard is written"),
    )
    .expect("the scorecard is JSON");
    let classes = card["classes"].as_array().expect("classes");
    let names: Vec<&str> = classes.iter().filter_map(|c| c["class"].as_str()).collect();
    for must in [
        "browsing",
        "download",
        "upload",
        "keepalive",
        "udp-answered",
        "udp-unanswered",
        "tls-sni-frozen",
        "nkb-freeze",
        "quic-swallowed",
        "scan-outbound",
        "scan-inbound",
        "udp-spray-inbound",
        "slow-server",
        "dns",
        "ping",
    ] {
        assert!(names.contains(&must), "class {must} missing from {names:?}");
    }
    let wrong: Vec<String> = classes
        .iter()
        .filter(|c| c["correct"] != serde_json::Value::Bool(true))
        .map(|c| format!("{}: {}", c["class"], c["verdicts"]))
        .collect();
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    // Every class's expected addresses were judged (a class with no verdicts proves nothing).
    for c in classes {
        let v = c["verdicts"].as_object().expect("verdicts");
        assert!(!v.is_empty(), "{} has no verdicts", c["class"]);
    }
    assert!(
        card["other_blocks"]
            .as_object()
            .is_some_and(|o| o.is_empty()),
        "blocks outside every class: {}",
        card["other_blocks"]
    );
    let enforcement = card["enforcement"].as_object().expect("enforcement");
    assert!(!enforcement.is_empty());
    for (what, e) in enforcement {
        let want = !what.starts_with("blocked");
        assert_eq!(e["reachable"], want, "{what}: {e}");
    }
}
