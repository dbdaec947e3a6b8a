//! Operating rosguard as an admin does (issue 12): the CLI finds the config and the state the
//! service uses without being told, read-only commands create nothing, one router down does
//! not hide the others, dry-run figures stay apart from real ones, and manual blocks and
//! allows go through the router and the history.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use routeros_sim::Family;

use crate::support::*;

fn router_toml(name: &str, address: &str) -> String {
    format!(
        "\n[[router]]\nname = \"{name}\"\naddress = \"{address}\"\nusername = \"admin\"\npassword_env = \"{PASSWORD_VAR}\"\n"
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

/// Reads `lines` until one contains `needle`; fails after 30 s or at the end of the output.
async fn until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
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

/// Items 11 and 14: at the default log level the daemon says it started (with a timestamp
/// outside the journal) and names the router it connected to; `status`, with no password,
/// says it runs and the router is connected; after SIGTERM, that it does not run.
#[tokio::test]
async fn the_daemon_says_it_started_and_status_agrees() {
    use nix::sys::signal::{kill, Signal};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &("[daemon]\nloop_delay = \"200ms\"\n".to_owned()
            + &router_toml("core", &sim.local_addr().to_string())),
    );
    let state = dir.path().join("state");
    let mut c = bare(&["run"]);
    c.arg("-c")
        .arg(&config)
        .arg("--state")
        .arg(&state)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut child = c.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = until(&mut lines, "starting with 1 router(s)").await;
    let (stamp, rest) = start.split_once(' ').unwrap();
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{start}");
    assert!(rest.starts_with("WARN "), "{start}");
    until(&mut lines, "core: connected to").await;

    // What the daemon records, read without a password (the variable is unset).
    let status = || {
        let mut c = bare(&["status"]);
        c.env_remove(PASSWORD_VAR)
            .arg("-c")
            .arg(&config)
            .arg("--state")
            .arg(&state);
        output(c)
    };
    let mut last = String::new();
    for _ in 0..500 {
        let (ok, out, err) = status().await;
        last = format!("{out}{err}");
        if ok && out.contains("router core (") && out.contains("): connected") {
            break;
        }
    }
    assert!(last.contains("running (pid"), "{last}");
    assert!(
        last.contains("router core (") && last.contains("): connected"),
        "{last}"
    );
    assert!(last.contains("block list: 0 of max_list_size"), "{last}");

    kill(pid, Signal::SIGTERM).unwrap();
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(done.success());
    let (ok, out, _) = status().await;
    assert!(!ok && out.contains("is not running"), "{out}");
}

/// Item 11: under systemd (`JOURNAL_STREAM`) human lines leave the timestamp to the journal;
/// `--log-format json` makes every line JSON, a detection's fields and a fatal error too.
#[tokio::test]
async fn journal_lines_have_no_timestamp_and_json_lines_are_json() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let sim = sim().await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &("[daemon]\nloop_delay = \"200ms\"\n".to_owned()
            + &router_toml("core", &sim.local_addr().to_string())),
    );
    let spawn = |extra: &[&str], journal: bool| {
        let mut c = bare(&["run"]);
        c.args(extra)
            .arg("-c")
            .arg(&config)
            .arg("--state")
            .arg(dir.path().join("state"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if journal {
            c.env("JOURNAL_STREAM", "8:12345");
        }
        c.spawn().unwrap()
    };

    let mut child = spawn(&[], true);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = until(&mut lines, "starting with 1 router(s)").await;
    assert!(
        start.starts_with("WARN "),
        "no timestamp in the journal: {start}"
    );
    child.kill().await.unwrap();

    let mut child = spawn(&["--log-format", "json"], false);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = until(&mut lines, "starting with 1 router(s)").await;
    let start: serde_json::Value = serde_json::from_str(&start).expect("a JSON line");
    assert_eq!(start["level"], "WARN", "{start}");
    let detected = until(&mut lines, "Detected").await;
    let detected: serde_json::Value = serde_json::from_str(&detected).expect("a JSON line");
    let fields = &detected["fields"];
    let field = |k: &str| {
        fields
            .get(k)
            .or_else(|| detected.get(k))
            .unwrap_or_else(|| panic!("no {k} in {detected}"))
            .clone()
    };
    assert_eq!(field("router"), "core");
    assert_eq!(field("src"), "192.168.88.50:54321");
    assert_eq!(field("dst"), "203.0.113.45:443");
    assert_eq!(field("protocol"), "tcp");
    child.kill().await.unwrap();

    // A fatal error is JSON too.
    std::fs::write(&config, "[daemon]\nnonsense = 1\n").unwrap();
    let mut c = bare(&["--log-format", "json", "check-config"]);
    c.arg("-c").arg(&config);
    let (ok, _, err) = output(c).await;
    assert!(!ok);
    let line: serde_json::Value = serde_json::from_str(err.trim()).expect("one JSON line");
    assert_eq!(line["level"], "ERROR", "{err}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("daemon.nonsense"),
        "{err}"
    );
}
