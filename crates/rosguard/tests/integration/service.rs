//! The documented systemd install, run for real. The README's "Running as a systemd service"
//! blocks (parsed out of README.md, so the README cannot drift) run with their system paths
//! moved into a temporary root; then the unit's `ExecStartPre=` and `ExecStart=` (parsed out of
//! `dist/rosguard.service`) run the way systemd runs them: as a throwaway uid standing in for
//! `DynamicUser=`, in a clean environment with the `EnvironmentFile=`'s variables, a private
//! `$STATE_DIRECTORY`, a `$CREDENTIALS_DIRECTORY` holding what `LoadCredential=` and
//! `SetCredential=` put there, and `UMask=`, against simulators on 127.0.0.1. The unit is also
//! held to `systemd-analyze security` 2.5 or less and must pass `systemd-analyze verify`.
//!
//! Not emulated: the sandbox itself (namespaces, seccomp, capability bounds), which needs
//! systemd as PID 1. Run as root (as CI does), the commands run as uid/gid 61234, which no
//! account has; run as another user, they run as that user, which still checks the install,
//! the credentials and the cycles but not that a stranger to the files can read what it must.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use routeros_sim::{SimConfig, SimHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

const README: &str = include_str!("../../../../README.md");
const UNIT: &str = include_str!("../../../../dist/rosguard.service");
const BIN: &str = env!("CARGO_BIN_EXE_rosguard");

/// The uid and gid standing in for `DynamicUser=` when the test runs as root.
const THROWAWAY_ID: u32 = 61_234;
/// The password the README's commands write; the simulators' user has it.
const README_PASSWORD: &str = "CHANGE-ME";
/// The unit name, for `/run/credentials/UNIT`.
const UNIT_NAME: &str = "rosguard.service";
/// How long the daemon may take to show a cycle, or to stop.
const PATIENCE: Duration = Duration::from_secs(60);
/// The README's promise, and the test's limit, for `systemd-analyze security`.
const MAX_EXPOSURE: f64 = 2.5;

/// The repository's root: the README's commands run there (they name `dist/...`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn running_as_root() -> bool {
    tempfile::tempfile().unwrap().metadata().unwrap().uid() == 0
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The README's "Running as a systemd service" section.
fn service_section() -> &'static str {
    let start = README
        .find("## Running as a systemd service\n")
        .expect("the README has a 'Running as a systemd service' section");
    let rest = &README[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

/// The `sh` blocks of the section, in order, each with its lines unindented.
fn sh_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = service_section();
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + "```sh\n".len()..];
        let end = body.find("```").expect("a closed fence");
        let lines: Vec<&str> = body[..end].lines().map(str::trim).collect();
        blocks.push(lines.join("\n").trim().to_owned());
        rest = &body[end..];
    }
    blocks
}

/// The values of `key=` in the unit's `[Service]` section, in order.
fn unit_values(key: &str) -> Vec<String> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') && !line.starts_with(';') {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    out.push(v.trim().to_owned());
                }
            }
        }
    }
    out
}

fn unit_value(key: &str) -> String {
    let values = unit_values(key);
    assert_eq!(values.len(), 1, "the unit sets {key}= once: {values:?}");
    values.into_iter().next().unwrap()
}

/// A systemd-style value with C escapes (`SetCredential=`).
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            other => panic!("escape \\{other:?} in {value:?} is not emulated"),
        }
    }
    out
}

/// A temporary root standing in for `/`: the system paths the install writes and the unit
/// reads are moved into it, so the test never touches the real `/etc`, `/usr` or `/var`.
struct Root {
    dir: tempfile::TempDir,
}

/// The system paths moved into the root.
const SYSTEM_PREFIXES: [&str; 4] = ["/etc/", "/usr/", "/var/", "/run/"];
/// Absolute paths the install and the unit may use as they are.
const HOST_PATHS: [&str; 3] = ["/dev/stdin", "/dev/null", "/bin/kill"];

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        // Every user can enter it, as every user can enter `/`.
        chmod(dir.path(), 0o755);
        let root = Root { dir };
        // What a system has before the install.
        for d in [
            "usr/local/bin",
            "etc/systemd/system",
            "var/lib",
            "run/credentials",
        ] {
            std::fs::create_dir_all(root.dir.path().join(d)).unwrap();
        }
        root
    }

    /// `abs` (an absolute path) inside the root.
    fn path(&self, abs: &str) -> PathBuf {
        assert!(abs.starts_with('/'), "{abs} is absolute");
        self.dir.path().join(&abs[1..])
    }

    /// `text` with every absolute system path moved into the root; panics if an absolute
    /// path is left that would reach outside it.
    fn rewrite(&self, text: &str) -> String {
        let root = self.dir.path().to_str().unwrap();
        let mut out = String::with_capacity(text.len());
        let mut prev: Option<char> = None;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let at_path_start = !prev.is_some_and(|p| p.is_alphanumeric() || "/._~".contains(p));
            if at_path_start && SYSTEM_PREFIXES.iter().any(|p| rest.starts_with(p)) {
                out.push_str(root);
            }
            let c = rest.chars().next().unwrap();
            out.push(c);
            prev = Some(c);
            i += c.len_utf8();
        }
        // Comments may name anything; URLs (`https://...`) are no paths.
        let live = out.lines().filter(|l| !l.trim_start().starts_with('#'));
        for word in
            live.flat_map(|l| l.split(|c: char| c.is_whitespace() || "=:\"'|&;<>()".contains(c)))
        {
            assert!(
                !word.starts_with('/')
                    || word.starts_with("//")
                    || word.starts_with(root)
                    || HOST_PATHS.contains(&word),
                "{word} would reach outside the test's root; add it to the emulation"
            );
        }
        out
    }
}

/// Runs the README's install blocks (the first, and the rest unless `only_first`) in `root`:
/// verbatim but for the system paths, `~/.cargo/bin/rosguard` (the binary cargo built) and
/// the `systemctl`/`journalctl` lines, which are what the rest of the test emulates.
fn install(root: &Root, only_first: bool) {
    let blocks = sh_blocks();
    assert!(
        blocks.len() >= 2,
        "the install block and the password_env block: {blocks:?}"
    );
    let take = if only_first { 1 } else { blocks.len() };
    let mut script = String::new();
    let mut skipped = Vec::new();
    for block in &blocks[..take] {
        for line in block.lines() {
            if line.starts_with("systemctl ") || line.starts_with("journalctl ") {
                skipped.push(line.to_owned());
            } else {
                script.push_str(line);
                script.push('\n');
            }
        }
    }
    assert_eq!(
        skipped.len(),
        3,
        "daemon-reload/enable, journalctl and reload: {skipped:?}"
    );
    assert!(script.contains("~/.cargo/bin/rosguard"), "{script}");
    assert!(script.contains(README_PASSWORD), "{script}");
    // The binary is read from where cargo built it, and installed into the root.
    let script = root.rewrite(&script).replace("~/.cargo/bin/rosguard", BIN);
    let out = std::process::Command::new("sh")
        .arg("-euc")
        .arg(&script)
        .current_dir(workspace())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's install failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The admin's edit of the installed config: the router at `core`, its paths in the root,
/// and (with `edge`) a second router whose password comes from the environment file.
fn edit_config(root: &Root, core: &SimHandle, edge: Option<&SimHandle>) -> PathBuf {
    let path = root.path("/etc/rosguard/rosguard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let shipped = "address = \"192.168.88.1:8728\"";
    assert!(text.contains(shipped), "the example's router address");
    let mut text =
        root.rewrite(&text.replace(shipped, &format!("address = \"{}\"", core.local_addr())));
    if let Some(edge) = edge {
        text.push_str(&format!(
            "\n[[router]]\nname = \"edge\"\naddress = \"{}\"\nusername = \"rosguard\"\n\
             password_env = \"ROSGUARD_PASSWORD\"\n",
            edge.local_addr()
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A simulator whose `rosguard` user has the README's password, with a DPI-frozen flow.
async fn router() -> SimHandle {
    let sim = sim_with(SimConfig {
        users: vec![("rosguard".into(), README_PASSWORD.into())],
        ..SimConfig::default()
    })
    .await;
    sim.add_connection(frozen_tls("192.168.88.50:54321", "203.0.113.45:443"));
    sim
}

/// What systemd sets up for a start of the unit, done by hand.
struct Service {
    uid: u32,
    gid: u32,
    env: Vec<(String, String)>,
    state_dir: PathBuf,
    umask: String,
}

impl Service {
    /// Sets up the state directory, the credentials and the environment as systemd does at
    /// the start of the unit. Panics where systemd would refuse to start it.
    fn start(root: &Root) -> Service {
        assert_eq!(unit_value("DynamicUser"), "yes");
        let (uid, gid) = if running_as_root() {
            (THROWAWAY_ID, THROWAWAY_ID)
        } else {
            let me = tempfile::tempfile().unwrap().metadata().unwrap();
            (me.uid(), me.gid())
        };
        let chown = |p: &Path| std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        let mut env = vec![(
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        )];

        // StateDirectory=: created, owned by the service's user, with StateDirectoryMode=.
        let name = unit_value("StateDirectory");
        let state_dir = root.path(&format!("/var/lib/{name}"));
        let state_mode = unit_values("StateDirectoryMode")
            .first()
            .map_or(0o755, |m| u32::from_str_radix(m, 8).unwrap());
        std::fs::create_dir_all(&state_dir).unwrap();
        chown(&state_dir);
        chmod(&state_dir, state_mode);
        env.push(("STATE_DIRECTORY".into(), path_text(&state_dir)));
        if let Some(dir) = unit_values("ConfigurationDirectory").first() {
            let dir = root.path(&format!("/etc/{dir}"));
            env.push(("CONFIGURATION_DIRECTORY".into(), path_text(&dir)));
        }

        // LoadCredential=ID:PATH, read as root; SetCredential=ID:VALUE is the default of the
        // same ID when PATH does not exist, and without one the unit does not start.
        let creds = root.path(&format!("/run/credentials/{UNIT_NAME}"));
        std::fs::create_dir_all(&creds).unwrap();
        let set: Vec<(String, String)> = unit_values("SetCredential")
            .iter()
            .map(|v| {
                let (id, value) = v.split_once(':').expect("SetCredential=ID:VALUE");
                (id.to_owned(), unescape(value))
            })
            .collect();
        for load in unit_values("LoadCredential") {
            let (id, source) = load.split_once(':').expect("LoadCredential=ID:PATH");
            let source = PathBuf::from(root.rewrite(source));
            let data = match std::fs::read(&source) {
                Ok(data) => data,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => set
                    .iter()
                    .find(|(s, _)| s == id)
                    .map(|(_, v)| v.clone().into_bytes())
                    .unwrap_or_else(|| {
                        panic!(
                            "systemd would not start the unit: credential {id}: {} does not exist",
                            source.display()
                        )
                    }),
                Err(e) => panic!("credential {id}: {e}"),
            };
            let file = creds.join(id);
            std::fs::write(&file, data).unwrap();
            chown(&file);
            chmod(&file, 0o400);
        }
        chown(&creds);
        chmod(&creds, 0o500);
        env.push(("CREDENTIALS_DIRECTORY".into(), path_text(&creds)));

        // EnvironmentFile=: read by systemd as root; `-` makes a missing file fine.
        for file in unit_values("EnvironmentFile") {
            let (optional, file) = match file.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, file.as_str()),
            };
            let file = PathBuf::from(root.rewrite(file));
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(_) if optional => continue,
                Err(e) => panic!("EnvironmentFile {}: {e}", file.display()),
            };
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                let (k, v) = line.split_once('=').expect("KEY=VALUE");
                env.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
            }
        }
        Service {
            uid,
            gid,
            env,
            state_dir,
            // systemd's default for system services.
            umask: unit_values("UMask")
                .first()
                .cloned()
                .unwrap_or_else(|| "0022".to_owned()),
        }
    }

    /// One of the unit's command lines (`ExecStartPre=`, `ExecStart=`) as the service runs
    /// it: its paths in the root, as the service's user, with the unit's environment, umask
    /// and working directory (`/`).
    fn command(&self, root: &Root, line: &str) -> Command {
        assert!(
            !line.starts_with(['-', '+', '!', '@', ':']) && !line.contains(['"', '\'', '$']),
            "prefixes, quoting and variables are not emulated: {line}"
        );
        let line = root.rewrite(line);
        let mut words = line.split_whitespace();
        let program = words.next().expect("a command");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!("umask {} && exec \"$@\"", self.umask))
            .arg("sh")
            .arg(program)
            .args(words)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// The same, without `$CREDENTIALS_DIRECTORY`: what the unit did before it passed the
    /// password file as a credential.
    fn command_without_credentials(&self, root: &Root, line: &str) -> Command {
        let mut command = self.command(root, line);
        command.env_remove("CREDENTIALS_DIRECTORY");
        command
    }
}

fn path_text(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temporary path").to_owned()
}

fn output_text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads `lines` until each of `needles` has been seen in a line, or fails after PATIENCE.
async fn until_all(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    needles: &[&str],
    seen: &mut Vec<String>,
) {
    let wait = async {
        let mut missing: Vec<&str> = needles.to_vec();
        while !missing.is_empty() {
            let Some(line) = lines.next_line().await.unwrap() else {
                panic!(
                    "the daemon's stderr ended before {missing:?}:\n{}",
                    seen.join("\n")
                );
            };
            missing.retain(|n| !line.contains(n));
            seen.push(line);
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        panic!("timed out waiting for {needles:?}:\n{}", seen.join("\n"));
    }
}

/// The documented install, as written: the service starts (check-config passes), runs cycles
/// on both routers (password_file through LoadCredential=, password_env through
/// EnvironmentFile=), writes a private state database and stops on SIGTERM.
#[tokio::test]
async fn the_documented_install_starts_runs_cycles_and_stops() {
    let (core, edge) = (router().await, router().await);
    let root = Root::new();
    install(&root, false);
    // The modes the README promises.
    assert_eq!(mode(&root.path("/etc/rosguard")), 0o755);
    assert_eq!(mode(&root.path("/etc/rosguard/rosguard.toml")), 0o644);
    assert_eq!(mode(&root.path("/etc/rosguard/password")), 0o600);
    assert_eq!(mode(&root.path("/etc/rosguard/env")), 0o600);
    edit_config(&root, &core, Some(&edge));
    let service = Service::start(&root);

    let pre = unit_value("ExecStartPre");
    if running_as_root() {
        // The service's user cannot read the 0600 root password file itself: the credential
        // is what gets it there, and without one the error says so.
        let out = service
            .command_without_credentials(&root, &pre)
            .output()
            .await
            .unwrap();
        let (_, err) = output_text(&out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("permission denied") && err.contains("LoadCredential=password:"),
            "{err}"
        );
    }
    let out = service.command(&root, &pre).output().await.unwrap();
    let (stdout, err) = output_text(&out);
    assert!(out.status.success(), "ExecStartPre= failed:\n{stdout}{err}");
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(
        stdout.contains("router \"core\"") && stdout.contains("router \"edge\""),
        "{stdout}"
    );

    let mut daemon = service
        .command(&root, &unit_value("ExecStart"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(daemon.id().unwrap()).unwrap());
    let mut lines = BufReader::new(daemon.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    until_all(
        &mut lines,
        &[
            "core: Detected asymmetric tcp connection",
            "edge: Detected asymmetric tcp connection",
        ],
        &mut seen,
    )
    .await;
    // `sh -c 'umask ... && exec ...'` became the daemon: the pid is the daemon's ($MAINPID).
    assert_eq!(
        unit_value("ExecReload"),
        "/bin/kill -HUP $MAINPID",
        "SIGHUP reloads the config"
    );
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(PATIENCE, daemon.wait())
        .await
        .expect("the daemon stops on SIGTERM")
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    assert!(status.success(), "{status}:\n{}", seen.join("\n"));
    assert_eq!(list_addresses(&core, "tls_block"), ["203.0.113.45"]);
    assert_eq!(list_addresses(&edge, "tls_block"), ["203.0.113.45"]);

    // The state: the service's own, private, and the cycles are in it.
    let db = service.state_dir.join("rosguard.db");
    let meta = std::fs::metadata(&db).expect("the daemon created its state database");
    assert_eq!((meta.uid(), meta.gid()), (service.uid, service.gid));
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&service.state_dir), 0o700);
    let store = rosguard_store::Store::open_read_only(&db).unwrap();
    for name in ["core", "edge"] {
        assert!(store.counters(name).unwrap()["cycles"] >= 1, "{name}");
        assert_eq!(store.active_blocks(name, 0).unwrap().len(), 1, "{name}");
    }
}

/// With the password in the environment file only (no password file), the unit still
/// starts: SetCredential= stands in for the missing file. A config that still names the file
/// is told it is missing, not handed an empty password.
#[tokio::test]
async fn the_unit_starts_without_a_password_file_when_the_password_is_in_the_environment() {
    let core = router().await;
    let root = Root::new();
    install(&root, false);
    std::fs::remove_file(root.path("/etc/rosguard/password")).unwrap();
    let config = edit_config(&root, &core, None);
    let text_with_file = std::fs::read_to_string(&config).unwrap();
    let file_line = format!(
        "password_file = \"{}\"",
        path_text(&root.path("/etc/rosguard/password"))
    );
    assert!(text_with_file.contains(&file_line), "{text_with_file}");
    std::fs::write(
        &config,
        text_with_file.replace(&file_line, "password_env = \"ROSGUARD_PASSWORD\""),
    )
    .unwrap();

    let service = Service::start(&root);
    let pre = unit_value("ExecStartPre");
    let out = service.command(&root, &pre).output().await.unwrap();
    let (stdout, err) = output_text(&out);
    assert!(out.status.success(), "{stdout}{err}");

    std::fs::write(&config, &text_with_file).unwrap();
    let out = service.command(&root, &pre).output().await.unwrap();
    let (_, err) = output_text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("/etc/rosguard/password"),
        "{err}"
    );
}

/// The unit is hardened (`systemd-analyze security` 2.5 or less, the number the README
/// states) and valid (`systemd-analyze verify`, offline, with its programs installed in the
/// root: no warning at all, since systemd ignores settings it cannot parse).
#[test]
fn the_unit_is_hardened_and_verifies() {
    let analyze = |args: &[&str]| {
        std::process::Command::new("systemd-analyze")
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap_or_else(|e| {
                panic!("systemd-analyze: {e}; install it (Debian/Ubuntu package `systemd`)")
            })
    };
    let unit = workspace().join("dist/rosguard.service");
    let out = analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    let (stdout, err) = output_text(&out);
    assert!(err.trim().is_empty(), "systemd-analyze complains:\n{err}");
    let score: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for rosguard.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    let exposed: Vec<&str> = stdout.lines().filter(|l| l.starts_with('✗')).collect();
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{}",
        exposed.join("\n")
    );
    let stated = service_section()
        .split("rates it ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("the README states the unit's rating");
    assert_eq!(stated, score, "the README's rating is the measured one");

    let root = Root::new();
    install(&root, true);
    let installed = root.path("/etc/systemd/system/rosguard.service");
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), UNIT);
    let moved = root.dir.path().join(UNIT_NAME);
    std::fs::write(&moved, root.rewrite(UNIT)).unwrap();
    let out = analyze(&["verify", moved.to_str().unwrap()]);
    let (stdout, err) = output_text(&out);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify:\n{stdout}{err}"
    );
}
