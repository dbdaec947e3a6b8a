//! Operating rosguard as an admin does (issue 12): the CLI finds the config and the state the
//! service uses without being told, read-only commands create nothing, one router down does
//! not hide the others, dry-run figures stay apart from real ones, and manual blocks and
//! allows go through the router and the history.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use routeros_sim::Family;
use tokio::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rosguard");
const PASSWORD_VAR: &str = "ROSGUARD_TEST_PASSWORD";

fn router_toml(name: &str, address: &str) -> String {
    format!(
        "\n[[router]]\nname = \"{name}\"\naddress = \"{address}\"\nusername = \"admin\"\npassword_env = \"{PASSWORD_VAR}\"\n"
    )
}

/// The binary with a clean environment for config and state: no `-c`, no `--state`, so it
/// finds both the way an admin's shell does.
fn bare(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env(PASSWORD_VAR, "")
        .env_remove("RUST_LOG")
        .env_remove("ROSGUARD_CONFIG")
        .env_remove("ROSGUARD_STATE")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null());
    c
}

async fn output(mut c: Command) -> (bool, String, String) {
    let out = c.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rosguard ARGS -c CONFIG --state DIR`.
async fn run(config: &Path, state: &Path, args: &[&str]) -> (bool, String, String) {
    let mut c = bare(args);
    c.arg("-c").arg(config).arg("--state").arg(state);
    output(c).await
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rosguard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Item 3 and 16: with `ROSGUARD_CONFIG` naming the config and the config's `state_dir`
/// naming the state, `why` reads what `once` recorded (and not `$STATE_DIRECTORY` or a home
/// directory), a read-only command before any run creates no database, and `check-config
/// --print` shows the effective settings per router with its override applied.
#[tokio::test]
async fn the_cli_finds_the_services_config_and_state_and_readers_create_nothing() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("service-state");
    let elsewhere = dir.path().join("elsewhere");
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n[blocking]\nblock_timeout = \"1d\"\n",
        state.display()
    );
    text.push_str(&router_toml("core", &sim.local_addr().to_string()));
    text.push_str("[router.blocking]\nblock_timeout = \"3h\"\n");
    let config = write(dir.path(), &text);
    let with_env = |args: &[&str]| {
        let mut c = bare(args);
        c.env("ROSGUARD_CONFIG", &config)
            .env("STATE_DIRECTORY", &elsewhere)
            .env("HOME", dir.path());
        c
    };

    let (ok, out, err) = output(with_env(&["why", "203.0.113.45"])).await;
    assert!(!ok, "{out}{err}");
    assert!(
        !state.join("rosguard.db").exists() && !elsewhere.exists(),
        "a reader created a database: {out}{err}"
    );
    let (ok, _, err) = output(with_env(&["status"])).await;
    assert!(!ok, "nothing runs: {err}");
    assert!(
        !state.join("rosguard.db").exists(),
        "status created a database"
    );

    let (ok, out, err) = output(with_env(&["once"])).await;
    assert!(ok, "{out}{err}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.45"]);
    assert!(state.join("rosguard.db").exists());
    assert!(!elsewhere.exists(), "state_dir wins over $STATE_DIRECTORY");
    let (ok, out, err) = output(with_env(&["why", "203.0.113.45"])).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("was blocked on router core"), "{out}");

    let (ok, out, err) = output(with_env(&["check-config", "--print"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("core") && out.contains("3h"), "{out}");
    assert!(
        !out.contains("1d"),
        "the router's override replaces the global: {out}"
    );
}

/// Item 6: with one router of the config down, `list` and `stats` still print the healthy
/// one, name the failed one, and exit non-zero; `once --json` lists the failed router with
/// its error instead of leaving it out.
#[tokio::test]
async fn one_router_down_does_not_hide_the_others() {
    let sim = sim().await;
    sim.add_list_entry(Family::V4, "tls_block", "198.18.7.9", None, Some("by hand"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = router_toml("gone", &closed.to_string())
        + &router_toml("core", &sim.local_addr().to_string());
    let config = write(dir.path(), &text);
    let state = dir.path().join("state");

    let (ok, out, err) = run(&config, &state, &["list"]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("198.18.7.9"),
        "the healthy router's list: {out}"
    );
    assert!(err.contains("gone"), "{err}");

    let (ok, out, err) = run(&config, &state, &["stats"]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("router core") && out.contains("tls_block: 1 entries"),
        "{out}"
    );
    assert!(
        out.contains("router gone") && out.contains("UNREACHABLE"),
        "{out}"
    );

    let (ok, out, err) = run(&config, &state, &["once", "--json"]).await;
    assert!(!ok, "{out}{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    let routers: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["router"].as_str().unwrap())
        .collect();
    assert_eq!(routers, ["gone", "core"], "{out}");
    assert!(reports[0]["error"].is_string(), "{out}");
    assert!(reports[1]["report"].is_object(), "{out}");
}

/// Item 7: would-be blocks of `once --dry-run` are counted as dry-run decisions, never as
/// blocks, in `stats` (text and JSON).
#[tokio::test]
async fn dry_run_decisions_are_counted_apart_from_blocks() {
    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim.add_connection(frozen_tls("192.168.88.51:54321", "203.0.113.46:443"));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &router_toml("core", &sim.local_addr().to_string()),
    );
    let state = dir.path().join("state");
    for _ in 0..3 {
        assert!(run(&config, &state, &["once", "--dry-run"]).await.0);
    }
    assert!(list_addresses(&sim, "tls_block").is_empty());
    let (ok, out, err) = run(&config, &state, &["stats", "--json"]).await;
    assert!(ok, "{out}{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let history = &stats[0]["history"];
    assert_eq!(history["blocked"].as_u64().unwrap_or(0), 0, "{history}");
    assert!(
        history["dry_run_blocked"].as_u64().unwrap_or(0) >= 2,
        "{history}"
    );

    // One real run: the real figure is what the list holds.
    assert!(run(&config, &state, &["once"]).await.0);
    let (_, out, _) = run(&config, &state, &["stats", "--json"]).await;
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats[0]["history"]["blocked"], 2, "{out}");
    assert_eq!(list_addresses(&sim, "tls_block").len(), 2);
}

/// Item 15: `block` adds through the safety checks (a LAN host is refused unless `--force`)
/// and is recorded in `why`; `allow` adds to the allowlist and lifts the block.
#[tokio::test]
async fn block_and_allow_by_hand() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &router_toml("core", &sim.local_addr().to_string()),
    );
    let state = dir.path().join("state");

    let (ok, out, err) = run(
        &config,
        &state,
        &[
            "block",
            "203.0.113.9",
            "--timeout",
            "2h",
            "--comment",
            "ssh brute force",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.9"]);
    let (ok, out, _) = run(&config, &state, &["why", "203.0.113.9"]).await;
    assert!(ok && out.contains("ssh brute force"), "{out}");

    // The router's own LAN address is spared unless forced.
    let (ok, out, err) = run(&config, &state, &["block", "192.168.88.1"]).await;
    assert!(!ok, "{out}{err}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["203.0.113.9"]);
    let (ok, out, err) = run(&config, &state, &["block", "192.168.88.1", "--force"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        list_addresses(&sim, "tls_block"),
        ["192.168.88.1", "203.0.113.9"]
    );

    let (ok, out, err) = run(
        &config,
        &state,
        &["allow", "203.0.113.9", "--comment", "our partner"],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(list_addresses(&sim, "tls_block"), ["192.168.88.1"]);
    assert_eq!(list_addresses(&sim, "allowlist"), ["203.0.113.9"]);
}
