//! The `rosguard` binary end to end: exit codes, what it prints, SIGHUP reload, SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use routeros_sim::{Family, SimConfig, SimConnection, SimHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_rosguard");
pub(crate) const PASSWORD_VAR: &str = "ROSGUARD_TEST_PASSWORD";

pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

/// A config file for `sim` (plus `extra` TOML before the router).
pub(crate) fn setup(sim: &SimHandle, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rosguard.toml");
    write_config(&config, sim, extra);
    Setup { dir, config }
}

pub(crate) fn write_config(path: &Path, sim: &SimHandle, extra: &str) {
    let text = format!(
        "{extra}\n[[router]]\nname = \"core\"\naddress = \"{}\"\nusername = \"admin\"\npassword_env = \"{PASSWORD_VAR}\"\n",
        sim.local_addr()
    );
    std::fs::write(path, text).unwrap();
}

pub(crate) fn rosguard(s: &Setup, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("-c")
        .arg(&s.config)
        .arg("--state")
        .arg(s.dir.path().join("state"))
        .env(PASSWORD_VAR, "")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

pub(crate) async fn run(s: &Setup, args: &[&str]) -> (bool, String, String) {
    let out = rosguard(s, args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_accepts_good_and_names_the_bad_key() {
    let sim = sim().await;
    let s = setup(&sim, "");
    let (ok, out, _) = run(&s, &["check-config"]).await;
    assert!(ok);
    assert!(out.contains("OK"), "{out}");
    write_config(&s.config, &sim, "[blocking]\nblock_timeout = \"forever\"");
    let (ok, _, err) = run(&s, &["check-config"]).await;
    assert!(!ok);
    assert!(err.contains("blocking.block_timeout"), "{err}");
}

#[tokio::test]
async fn a_reader_that_went_away_ends_the_output_quietly() {
    // `rosguard check-config | head -0`: the pipe's reader is gone before the first line.
    let sim = sim().await;
    let s = setup(&sim, "");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // Not `output()`: it would replace stdout with a pipe of its own.
    let child = rosguard(&s, &["check-config"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn once_blocks_and_reports_and_dry_run_only_reports() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let s = setup(&sim, "");
    let (ok, out, _) = run(&s, &["once", "--dry-run"]).await;
    assert!(ok);
    assert!(out.contains("would block 203.0.113.45"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(list_addresses(&sim, "tls_block").is_empty());

    let (ok, out, _) = run(&s, &["once", "--json"]).await;
    assert!(ok);
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reports[0]["router"], "core");
    assert_eq!(reports[0]["report"]["blocks"][0]["address"], "203.0.113.45");
    assert_eq!(
        reports[0]["report"]["blocks"][0]["result"]["outcome"],
        "added"
    );
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);

    // The history explains it.
    let (ok, out, _) = run(&s, &["why", "203.0.113.45"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("was blocked on router core in tls_block for 1d"),
        "{out}"
    );
    assert!(
        out.contains("192.168.88.50:54321 -> 203.0.113.45:443"),
        "{out}"
    );
    assert!(out.contains("would have been blocked (dry run)"), "{out}");
    let (ok, out, _) = run(&s, &["why", "198.51.100.200"]).await;
    assert!(!ok);
    assert!(out.contains("no record"), "{out}");
}

#[tokio::test]
async fn once_fails_clearly_when_it_cannot_connect_or_log_in() {
    let sim = sim_with(SimConfig {
        users: vec![("admin".into(), "right".into())],
        ..SimConfig::default()
    })
    .await;
    let s = setup(&sim, "");
    let mut cmd = rosguard(&s, &["once"]);
    cmd.env(PASSWORD_VAR, "wrong-secret-123");
    let out = cmd.output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("core") && err.contains("invalid user name or password"),
        "{err}"
    );
    assert!(err.contains("api"), "names the policy needed: {err}");
    assert!(
        !err.contains("wrong-secret-123"),
        "the password never shows: {err}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &s.config,
        format!("[[router]]\nname = \"gone\"\naddress = \"{closed}\"\nusername = \"admin\"\npassword_env = \"{PASSWORD_VAR}\"\n"),
    )
    .unwrap();
    let (ok, _, err) = run(&s, &["once"]).await;
    assert!(!ok);
    assert!(
        err.contains("gone") && err.contains(&closed.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn list_unblock_and_clear() {
    let sim = sim().await;
    sim.add_list_entry(Family::V4, "tls_block", "198.18.7.9", None, Some("by hand"));
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    // A UDP flow stays flagged after its block: it would bring the address back.
    sim.add_connection(
        SimConnection::udp(sa("[fd00:88::50]:1001"), sa("[2001:db8::45]:443")).packets(30, 0),
    );
    let s = setup(&sim, "");
    assert!(run(&s, &["once"]).await.0);
    let (ok, out, _) = run(&s, &["list", "--json"]).await;
    assert!(ok);
    let routers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut addrs: Vec<String> = routers[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_owned())
        .collect();
    addrs.sort();
    assert_eq!(addrs, ["198.18.7.9", "2001:db8::45", "203.0.113.45"]);
    let (ok, out, _) = run(&s, &["list"]).await;
    assert!(
        ok && out.contains("1d") && out.contains("rosguard: tcp"),
        "{out}"
    );

    let (ok, out, _) = run(
        &s,
        &[
            "unblock",
            "2001:db8::45",
            "--for",
            "2h",
            "--comment",
            "our CDN",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("removed 2001:db8::45") && out.contains("removed 1 of its connections"),
        "{out}"
    );
    assert!(sim.address_list(Family::V6, "tls_block").is_empty());
    assert!(
        !table(&sim)
            .await
            .iter()
            .any(|(_, d)| d.contains("2001:db8::45")),
        "its flows are gone"
    );
    // The flow comes back (the client retries): the unblock still holds.
    sim.add_connection(
        SimConnection::udp(sa("[fd00:88::50]:1002"), sa("[2001:db8::45]:443")).packets(30, 0),
    );
    assert!(run(&s, &["once"]).await.0);
    assert!(
        sim.address_list(Family::V6, "tls_block").is_empty(),
        "an unblock sticks"
    );
    let (ok, out, _) = run(&s, &["why", "2001:db8::45"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("unblocked on router core")
            && out.contains("our CDN")
            && out.contains("not blocked again before"),
        "{out}"
    );

    let (ok, out, _) = run(&s, &["clear"]).await;
    assert!(ok);
    assert!(
        out.contains("1 entries not added by rosguard kept"),
        "{out}"
    );
    assert_eq!(list_addresses(&sim, "tls_block"), ["198.18.7.9"]);
    // Cleared entries are lifted in the history: a cycle does not restore them.
    assert!(run(&s, &["once"]).await.0);
    assert_eq!(list_addresses(&sim, "tls_block"), ["198.18.7.9"]);
    assert!(run(&s, &["clear", "--all"]).await.0);
    assert!(list_addresses(&sim, "tls_block").is_empty());
}

#[tokio::test]
async fn firewall_prints_installs_idempotently_at_the_top_and_removes() {
    let sim = sim().await;
    let s = setup(&sim, "");
    let (ok, out, _) = run(&s, &["firewall"]).await;
    assert!(ok);
    for rule in [
        "chain=forward action=drop src-address-list=tls_block",
        "chain=forward action=drop dst-address-list=tls_block",
        "chain=input action=drop src-address-list=tls_block",
        "chain=output action=drop dst-address-list=tls_block",
        "chain=input action=add-src-to-address-list protocol=tcp psd=21,3s,3,1 address-list=rosguard_scan",
    ] {
        assert!(out.contains(rule), "{rule}: {out}");
    }
    let before = sim.filter_rules_of(Family::V4).len();
    assert!(
        before > 0,
        "the simulator starts with RouterOS's default rules"
    );
    assert!(run(&s, &["firewall", "--install"]).await.0);
    let is_ours = |r: &Vec<(String, String)>| {
        r.iter()
            .any(|(k, v)| k == "comment" && v.starts_with("rosguard-firewall:"))
    };
    let rules = sim.filter_rules_of(Family::V4);
    assert_eq!(rules.len(), before + 6);
    assert!(
        rules[..6].iter().all(is_ours),
        "ours come first, before any accept rule: {rules:?}"
    );
    let comments: Vec<&str> = rules[..6]
        .iter()
        .map(|r| r.iter().find(|(k, _)| k == "comment").unwrap().1.as_str())
        .collect();
    assert_eq!(
        comments,
        [
            "rosguard-firewall: forward drop src-address-list=tls_block",
            "rosguard-firewall: forward drop dst-address-list=tls_block",
            "rosguard-firewall: input drop src-address-list=tls_block",
            "rosguard-firewall: output drop dst-address-list=tls_block",
            "rosguard-firewall: input psd to rosguard_scan",
            "rosguard-firewall: forward psd to rosguard_scan",
        ],
        "in the order printed"
    );
    let count = || {
        sim.filter_rules_of(Family::V4)
            .iter()
            .filter(|r| is_ours(r))
            .count()
            + sim
                .filter_rules_of(Family::V6)
                .iter()
                .filter(|r| is_ours(r))
                .count()
    };
    assert_eq!(count(), 12, "IPv4 and IPv6");
    assert!(run(&s, &["firewall", "--install"]).await.0);
    assert_eq!(count(), 12, "installing twice adds nothing");
    assert!(run(&s, &["firewall", "--remove"]).await.0);
    assert_eq!(count(), 0);
    assert_eq!(
        sim.filter_rules_of(Family::V4).len(),
        before,
        "the router's own rules stay"
    );

    write_config(
        &s.config,
        &sim,
        "[detection]\nblock_target = \"dst\"\n[detection.scan]\nstaging_list = \"\"",
    );
    let (_, out, _) = run(&s, &["firewall"]).await;
    assert!(
        out.contains("dst-address-list=tls_block")
            && !out.contains("src-address-list")
            && !out.contains("psd"),
        "{out}"
    );
}

/// Reads stderr lines until one contains `needle`.
pub(crate) async fn until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("stderr ended before {needle:?}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {needle:?}"))
}

#[tokio::test]
async fn sighup_reloads_the_config_and_sigterm_stops() {
    let sim = sim().await;
    let s = setup(&sim, "[daemon]\nlog_level = \"info\"\nloop_delay = \"200ms\"\n[blocking]\naddress_list = \"list_a\"");
    // kill_on_drop: a failing assertion must not leave a daemon running.
    let mut child = rosguard(&s, &["run"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    until(&mut lines, "connected to").await;
    sim.add_connection(frozen_tls("192.168.88.50:1000", "203.0.113.45:443"));
    let line = until(&mut lines, "Added 203.0.113.45 to list_a").await;
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(
        humantime::parse_rfc3339(stamp).is_ok(),
        "a timestamp first: {line}"
    );
    assert!(
        rest.starts_with("INFO [ConnectionMonitor] core: "),
        "{line}"
    );

    write_config(&s.config, &sim, "[daemon]\nlog_level = \"info\"\nloop_delay = \"200ms\"\n[blocking]\naddress_list = \"list_b\"");
    kill(pid, Signal::SIGHUP).unwrap();
    until(&mut lines, "reloaded").await;
    sim.add_connection(frozen_tls("192.168.88.50:1001", "203.0.113.46:443"));
    until(&mut lines, "Added 203.0.113.46 to list_b").await;

    std::fs::write(&s.config, "[daemon]\nnonsense = 1\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let line = until(&mut lines, "reload failed").await;
    assert!(
        line.contains("daemon.nonsense") && line.contains("unknown field `nonsense`"),
        "one line that says what is wrong: {line}"
    );
    sim.add_connection(frozen_tls("192.168.88.50:1002", "203.0.113.47:443"));
    until(&mut lines, "Added 203.0.113.47 to list_b").await;

    kill(pid, Signal::SIGTERM).unwrap();
    until(&mut lines, "stopped").await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(list_addresses(&sim, "list_a"), ["203.0.113.45"]);
    assert_eq!(
        list_addresses(&sim, "list_b"),
        ["203.0.113.46", "203.0.113.47"]
    );
}

#[tokio::test]
async fn the_demo_blocks_the_frozen_flows_and_spares_the_protected_ones() {
    let out = Command::new(BIN)
        .args(["demo", "--duration", "12s", "--loop-delay", "500ms"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("WARN [ConnectionMonitor] demo: Detected asymmetric tcp connection"),
        "{stderr}"
    );
    assert!(
        stderr.contains("INFO [ConnectionMonitor] demo: Added "),
        "{stderr}"
    );
    assert!(stdout.contains("rosguard demo summary"), "{stdout}");
    let blocked = stdout
        .lines()
        .skip_while(|l| !l.starts_with("BLOCKED"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .count();
    assert!(blocked >= 3, "{stdout}");
    assert!(stdout.contains("SPARED"), "{stdout}");
    assert!(
        stdout.contains("1.1.1.1") && stdout.contains("in address-list allowlist"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_unusable_state_directory_does_not_stop_protection() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let s = setup(&sim, "");
    // A state "directory" below a regular file cannot be created.
    let out = Command::new(BIN)
        .args(["once", "-c"])
        .arg(&s.config)
        .arg("--state")
        .arg(s.config.join("state"))
        .env(PASSWORD_VAR, "")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("running without persistent state"), "{err}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
}
