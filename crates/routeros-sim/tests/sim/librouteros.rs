//! The simulator checked by a real third-party client: Python librouteros (pinned in
//! tests/requirements.txt), driven by tests/librouteros_check.py.

use std::path::PathBuf;
use std::process::Command;

use routeros_sim::SimConnection;

use crate::{manual, start};

const INSTALL: &str = "run: python3 -m pip install -r tests/requirements.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librouteros_can_use_the_simulator() {
    let import = tokio::task::spawn_blocking(|| {
        Command::new("python3")
            .args(["-c", "import librouteros"])
            .output()
    })
    .await
    .unwrap();
    match import {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "librouteros is not importable: {}\n{INSTALL}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 could not be run ({e}); {INSTALL}"),
    }

    let sim = start(manual()).await;
    let sa = |s: &str| s.parse().unwrap();
    let sa_ip = |s: &str| s.parse().unwrap();
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.50:54321"), sa("203.0.113.45:443")).packets(10, 1),
    );
    sim.add_connection(
        SimConnection::tcp(sa("192.168.88.51:40000"), sa("142.250.74.46:443")).packets(100, 120),
    );
    sim.add_connection(
        SimConnection::udp(sa("192.168.88.52:5353"), sa("9.9.9.9:53")).packets(1, 1),
    );
    sim.add_connection(SimConnection::icmp(sa_ip("192.168.88.53"), sa_ip("8.8.8.8")).packets(3, 3));

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/librouteros_check.py");
    let port = sim.local_addr().port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &port, "--min-flagged", "1", "--min-or", "2"])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 could not be run");
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "librouteros check failed:\n{text}");
    assert!(text.contains("librouteros check passed"), "{text}");
    sim.shutdown().await;
}
