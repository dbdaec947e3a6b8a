use super::secrets::read_password_file;
use super::*;
use rosguard_core::settings::BlockTarget;

fn load(text: &str) -> Result<Config> {
    Config::from_toml(text, Path::new("/nonexistent"))
}

fn err(text: &str) -> String {
    format!("{:#}", load(text).unwrap_err())
}

const ROUTER: &str = r#"
[[router]]
name = "core"
address = "192.168.88.1"
username = "rosguard"
password_env = "ROSGUARD_TEST_PASSWORD_SET"
"#;

fn with_password<T>(f: impl FnOnce() -> T) -> T {
    std::env::set_var("ROSGUARD_TEST_PASSWORD_SET", "s3cret-value");
    f()
}

#[test]
fn empty_file_means_the_scripts_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.daemon, DaemonSettings::default());
    assert_eq!(c.daemon.loop_delay, Duration::from_secs(2));
    assert_eq!(c.daemon.max_conn_per_cycle, 50);
    assert_eq!(c.daemon.log_level, LogLevel::Warning);
    assert!(c.routers.is_empty());
    let r = &with_password(|| load(ROUTER)).unwrap().routers[0];
    assert_eq!(r.settings.detection, Detection::default());
    assert_eq!(r.settings.blocking, Blocking::default());
    assert_eq!(r.command_timeout, Duration::from_secs(30));
}

#[test]
fn full_example_parses_and_router_inherits_globals() {
    let c = with_password(|| {
        load(&format!(
            r#"
[detection]
enabled = true
monitored_ports = [443, 22]
protocols = ["tcp", "udp", 47, "icmp"]
min_orig_packets = 5
max_repl_packets = 1
block_target = "dst"
server_filter = false

[detection.scan]
min_ports = 30

[blocking]
address_list = "bad"
allowlist_name = "good"
allow = ["10.0.0.5", "192.168.0.0/16", "2001:db8::/32"]
block_timeout = "2d12h"
remove_tcp_conn = false
check_local_addr = true
dry_run = true

[daemon]
loop_delay = 5
max_conn_per_cycle = 20
log_level = "debug"
{ROUTER}
command_timeout = "10s"
[router.blocking]
block_timeout = 3600
[router.detection.scan]
window = "5m"
"#
        ))
    })
    .unwrap();
    assert_eq!(
        c.daemon.loop_delay,
        Duration::from_secs(5),
        "a bare number is seconds"
    );
    assert_eq!(c.daemon.max_conn_per_cycle, 20);
    let r = &c.routers[0];
    let (d, b) = (&r.settings.detection, &r.settings.blocking);
    assert_eq!(r.address, "192.168.88.1:8728", "default API port added");
    assert_eq!(r.password.expose(), "s3cret-value");
    assert_eq!(r.command_timeout, Duration::from_secs(10));
    assert_eq!(d.monitored_ports, vec![443, 22]);
    assert_eq!(d.protocols.len(), 4);
    assert_eq!(d.block_target, BlockTarget::Dst);
    assert!(!d.server_filter);
    assert_eq!(
        (d.scan.min_ports, d.scan.window),
        (30, Duration::from_secs(300)),
        "nested tables merge key by key"
    );
    assert_eq!(b.address_list, "bad");
    assert_eq!(b.allow.len(), 3);
    assert_eq!(
        b.block_timeout,
        Duration::from_secs(3600),
        "router override wins"
    );
    assert!(b.dry_run, "global value inherited");
    assert_eq!(r.settings.cycle.max_conn_per_cycle, 20);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e = err("[detection]\nmin_orig_packet = 3\n");
    assert!(e.contains("min_orig_packet"), "{e}");
    assert!(
        e.contains("min_orig_packets"),
        "suggests the right key: {e}"
    );
    assert!(err("[nonsense]\n").contains("nonsense"));
    let e = with_password(|| {
        err(&format!(
            "{ROUTER}\n[router.blocking]\nblok_timeout = \"1d\"\n"
        ))
    });
    assert!(
        e.contains("router \"core\".blocking") && e.contains("blok_timeout"),
        "{e}"
    );
}

#[test]
fn type_errors_name_the_key_not_only_the_line() {
    let e = err("[detection]\nmin_orig_packets = \"three\"\n");
    assert_eq!(
        e,
        "detection.min_orig_packets: expected an integer (0 or more), got \"three\""
    );
    let e = err("[blocking]\ndry_run = 1\n");
    assert!(
        e.starts_with("blocking.dry_run: expected true or false"),
        "{e}"
    );
    let e = err("[detection]\nmonitored_ports = [443, \"https\"]\n");
    assert!(e.starts_with("detection.monitored_ports"), "{e}");
}

#[test]
fn bad_values_name_the_key_and_the_fix() {
    let cases = [
        (
            "[blocking]\nblock_timeout = \"1x\"",
            "blocking.block_timeout",
        ),
        ("[blocking]\nallow = [\"10.0.0.300\"]", "blocking.allow"),
        (
            "[blocking]\nallow = [\"192.168.88.5/24\"]",
            "blocking.allow",
        ),
        (
            "[blocking]\nallowlist_name = \"tls_block\"",
            "blocking.address_list",
        ),
        (
            "[detection]\nmonitored_ports = [70000]",
            "detection.monitored_ports",
        ),
        (
            "[detection]\nmonitored_ports = [0]",
            "detection.monitored_ports",
        ),
        ("[detection]\nprotocols = [\"tcpp\"]", "detection.protocols"),
        ("[detection]\nprotocols = []", "detection.protocols"),
        (
            "[detection]\nblock_target = \"both\"",
            "detection.block_target",
        ),
        (
            "[detection]\nmin_orig_packets = -1",
            "detection.min_orig_packets",
        ),
        (
            "[detection.scan]\nstates = [\"syn-snet\"]",
            "detection.scan.states",
        ),
        ("[daemon]\nloop_delay = \"10ms\"", "daemon.loop_delay"),
        (
            "[daemon]\nmax_conn_per_cycle = 0",
            "daemon.max_conn_per_cycle",
        ),
        ("[daemon]\nlog_level = \"verbose\"", "daemon.log_level"),
        ("[daemon]\ncycle_deadline = 0", "daemon.cycle_deadline"),
    ];
    for (text, key) in cases {
        let e = err(text);
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = err("[blocking]\nallow = [\"192.168.88.5/24\"]");
    assert!(
        e.contains("192.168.88.0/24"),
        "names the network meant: {e}"
    );
}

#[test]
fn router_errors_name_the_router() {
    let e = err("[[router]]\nname = \"edge\"\nusername = \"u\"\npassword_env = \"X\"\n");
    assert!(e.contains("edge") && e.contains("address"), "{e}");
    let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\n");
    assert!(
        e.contains("password_env") && e.contains("password_file"),
        "{e}"
    );
    let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\npassword_env = \"ROSGUARD_SURELY_UNSET_VAR\"\n");
    assert!(
        e.contains("ROSGUARD_SURELY_UNSET_VAR") && e.contains("not set"),
        "{e}"
    );
    let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\npassword_env = \"X\"\ntls = true\n");
    assert!(e.contains("ca_file") && e.contains("fingerprint"), "{e}");
    let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\\u001b[2J\"\npassword_env = \"X\"\n");
    assert!(
        e.contains("router \"edge\".username") && e.contains("control"),
        "{e}"
    );
    let e = err("[[router]]\nname = \"edge\"\naddress = \"1.2.3.4\"\nusername = \"u\"\npassword_env = \"X\"\ntls_server_name = \"r\"\n");
    assert!(e.contains("tls_server_name"), "{e}");
    let e = with_password(|| err(&format!("{ROUTER}{ROUTER}")));
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn password_file_is_read_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
    let text = "[[router]]\nname = \"r\"\naddress = \"10.0.0.1:8729\"\nusername = \"u\"\npassword_file = \"pw\"\ntls = true\ntls_insecure = true\n";
    let c = Config::from_toml(text, dir.path()).unwrap();
    assert_eq!(c.routers[0].password.expose(), "hunter2");
    assert!(!format!("{:?}", c.routers[0]).contains("hunter2"));
    assert!(!c.effective_toml().unwrap().contains("hunter2"));
    assert!(matches!(c.routers[0].tls, Some(TlsConfig::Insecure)));
    let missing = Config::from_toml(&text.replace("\"pw\"", "\"nope\""), dir.path()).unwrap_err();
    assert!(
        format!("{missing:#}").contains("password_file"),
        "{missing:#}"
    );
}

#[test]
fn the_effective_settings_show_overrides_applied() {
    let c = with_password(|| load(&format!("[blocking]\nblock_timeout = \"2h\"\n{ROUTER}\n[router.detection]\nmin_orig_packets = 7\n"))).unwrap();
    let text = c.effective_toml().unwrap();
    let back: toml::Table = toml::from_str(&text).unwrap();
    let r = &back["router"].as_array().unwrap()[0];
    assert_eq!(r["name"].as_str(), Some("core"));
    assert_eq!(r["detection"]["min_orig_packets"].as_integer(), Some(7));
    assert_eq!(r["blocking"]["block_timeout"].as_str(), Some("2h"));
    assert_eq!(r["blocking"]["address_list"].as_str(), Some("tls_block"));
}

fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// systemd's copy in $CREDENTIALS_DIRECTORY, named after the file, wins over the file.
#[test]
fn password_file_is_read_from_the_systemd_credential_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let file = dir.path().join("password");
    write_mode(&file, "on-disk\n", 0o600);
    write_mode(&creds.join("password"), "from-credential\n", 0o400);
    let pw = read_password_file("router \"r\"", &file, Some(&creds)).unwrap();
    assert_eq!(pw.expose(), "from-credential");

    // Another file name: the credential is not for this file, the file is read.
    let other = dir.path().join("core.password");
    write_mode(&other, "core-secret\n", 0o600);
    let pw = read_password_file("router \"r\"", &other, Some(&creds)).unwrap();
    assert_eq!(pw.expose(), "core-secret");
    // No credentials directory at all: the file.
    let pw = read_password_file("router \"r\"", &file, None).unwrap();
    assert_eq!(pw.expose(), "on-disk");
}

/// The credential is there even when the file itself cannot be read by this user: that is
/// the point of it. Without the credential, the error says how to pass the file.
#[test]
fn an_unreadable_password_file_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    // A directory in its place cannot be read by anyone, root included.
    std::fs::create_dir(&file).unwrap();
    let e = format!(
        "{:#}",
        read_password_file("router \"r\"", &file, None).unwrap_err()
    );
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("0600"), "{e}");

    std::fs::remove_dir(&file).unwrap();
    let e = format!(
        "{:#}",
        read_password_file("router \"r\"", &file, None).unwrap_err()
    );
    assert!(e.contains("does not exist") && e.contains("0600"), "{e}");
    assert!(e.contains(&file.display().to_string()), "{e}");

    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    // What the shipped unit's `SetCredential=password:\n` passes when the file is missing.
    write_mode(&creds.join("password"), "\n", 0o400);
    let e = format!(
        "{:#}",
        read_password_file("router \"r\"", &file, Some(&creds)).unwrap_err()
    );
    assert!(
        e.contains("does not exist") && e.contains("empty credential"),
        "{e}"
    );
}

/// A password file others can read is worth a warning, which names the file and the fix
/// and never the password; a 0600 one is not.
#[test]
fn a_password_file_others_can_read_is_warned_about_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    write_mode(&file, "s3cret-in-file\n", 0o644);
    let (pw, logs) = warnings_of(|| read_password_file("router \"r\"", &file, None));
    assert_eq!(pw.unwrap().expose(), "s3cret-in-file");
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains(&file.display().to_string()), "{logs}");
    assert!(
        logs.contains("0644") && logs.contains("chmod 0600"),
        "{logs}"
    );
    assert!(logs.contains("LoadCredential=password:"), "{logs}");
    assert!(!logs.contains("s3cret"), "{logs}");

    write_mode(&file, "s3cret-in-file\n", 0o640);
    let (_, logs) = warnings_of(|| read_password_file("router \"r\"", &file, None));
    assert!(
        logs.contains("0640"),
        "group-readable is warned about too: {logs}"
    );

    write_mode(&file, "s3cret-in-file\n", 0o600);
    let (_, logs) = warnings_of(|| read_password_file("router \"r\"", &file, None));
    assert!(logs.is_empty(), "{logs}");
}

#[test]
fn fingerprints_accept_colons() {
    let fp = "AB:".repeat(31) + "AB";
    let text = format!("[[router]]\nname = \"r\"\naddress = \"10.0.0.1\"\nusername = \"u\"\npassword_env = \"ROSGUARD_TEST_PASSWORD_SET\"\ntls = true\nfingerprint = \"{fp}\"\n");
    let c = with_password(|| load(&text)).unwrap();
    assert_eq!(
        c.routers[0].address, "10.0.0.1:8729",
        "API-SSL port by default with tls"
    );
    assert!(matches!(c.routers[0].tls, Some(TlsConfig::Fingerprint(b)) if b == [0xAB; 32]));
    assert!(with_password(|| load(&text.replace(&fp, "abcd"))).is_err());
}

#[test]
fn addresses_are_normalised() {
    assert_eq!(
        normalise_address("10.0.0.1", 8728).as_deref(),
        Some("10.0.0.1:8728")
    );
    assert_eq!(
        normalise_address("router.lan", 8728).as_deref(),
        Some("router.lan:8728")
    );
    assert_eq!(
        normalise_address("router.lan:9000", 8728).as_deref(),
        Some("router.lan:9000")
    );
    assert_eq!(
        normalise_address("2001:db8::1", 8729).as_deref(),
        Some("[2001:db8::1]:8729")
    );
    assert_eq!(
        normalise_address("[2001:db8::1]:8728", 8729).as_deref(),
        Some("[2001:db8::1]:8728")
    );
    assert_eq!(normalise_address("host:0", 8728), None);
    assert_eq!(normalise_address("a b", 8728), None);
}

#[test]
fn select_names_the_known_routers() {
    let c = with_password(|| load(ROUTER)).unwrap();
    assert_eq!(c.select(None).unwrap().len(), 1);
    let e = c.select(Some("edge")).unwrap_err().to_string();
    assert!(e.contains("edge") && e.contains("core"), "{e}");
    assert!(load("").unwrap().select(None).is_err());
}

#[test]
fn merge_replaces_values_and_merges_tables() {
    let base: Table = toml::from_str("a = 1\nb = [1]\n[t]\nx = 1\ny = 2\n").unwrap();
    let over: Table = toml::from_str("b = [2]\n[t]\ny = 3\n").unwrap();
    let m = merge(base, &over);
    assert_eq!(m["a"].as_integer(), Some(1));
    assert_eq!(m["b"].as_array().unwrap()[0].as_integer(), Some(2));
    assert_eq!(m["t"]["x"].as_integer(), Some(1));
    assert_eq!(m["t"]["y"].as_integer(), Some(3));
}

/// The shipped example must stay a valid config with the documented defaults.
#[test]
fn the_shipped_example_parses_with_the_defaults_it_documents() {
    std::env::set_var("ROSGUARD_PASSWORD", "example");
    let text = include_str!("../../../../dist/rosguard.example.toml");
    // The password file it names is the admin's to create: not read here.
    let c = Config::from_toml_with(text, Path::new("/"), Secrets::Skip).unwrap();
    let r = &c.routers[0];
    assert_eq!(r.settings.detection, Detection::default());
    assert_eq!(r.settings.blocking, Blocking::default());
    assert_eq!(
        DaemonSettings {
            state_dir: None,
            ..c.daemon.clone()
        },
        DaemonSettings::default()
    );
    assert_eq!(
        c.daemon.state_dir.as_deref(),
        Some(Path::new(DEFAULT_STATE_DIR))
    );
    // The recording is shown, commented out: off, with the documented defaults.
    assert_eq!(c.record, RecordSettings::default());
    let shown = text
        .lines()
        .skip_while(|l| !l.starts_with("# [record]"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(shown.starts_with("[record]"), "the example shows [record]");
    let c = Config::from_toml_with(&shown, Path::new("/"), Secrets::Skip).unwrap();
    assert_eq!(
        c.record,
        RecordSettings {
            dir: Some(PathBuf::from("/var/lib/rosguard/recordings")),
            ..RecordSettings::default()
        }
    );
}

#[test]
fn record_is_off_by_default_and_its_directory_follows_the_config() {
    let c = load("").unwrap();
    assert_eq!(c.record, RecordSettings::default());
    assert_eq!(c.record.current_file("core"), None);
    let c = load("[record]\ndir = \"rec\"\nmax_bytes = 1048576\nkeep = 0\n").unwrap();
    assert_eq!(c.record.dir.as_deref(), Some(Path::new("/nonexistent/rec")));
    assert_eq!((c.record.max_bytes, c.record.keep), (1 << 20, 0));
    assert_eq!(
        c.record.current_file("core").unwrap(),
        Path::new("/nonexistent/rec/core.rec")
    );
    // No name reaches outside the directory or looks like a rotated file.
    assert_eq!(
        c.record.current_file("../x/core.1").unwrap(),
        Path::new("/nonexistent/rec/___x_core_1.rec")
    );
}

#[test]
fn bad_record_values_are_named_with_their_fix() {
    let e = err("[record]\ndir = \"/r\"\nmax_bytes = 1000\n");
    assert!(
        e.contains("record.max_bytes: 1000 is below 65536") && e.contains("256 MiB"),
        "{e}"
    );
    let e = err("[record]\nmax_bytes = \"256MiB\"\n");
    assert!(
        e.contains("record.max_bytes: expected an integer (0 or more), got \"256MiB\""),
        "{e}"
    );
    let e = err("[record]\nkeep = 101\n");
    assert!(e.contains("record.keep: 101 is more than 100"), "{e}");
    let e = err("[record]\nkeep = -1\n");
    assert!(e.contains("record.keep"), "{e}");
    let e = err("[record]\ndir = \"\"\n");
    assert!(e.contains("record.dir: is empty"), "{e}");
    let e = err("[record]\npath = \"/r\"\n");
    assert!(
        e.contains("record") && e.contains("unknown field `path`"),
        "{e}"
    );
    let e = err("record = 1\n");
    assert!(e.contains("record: expected a table ([record])"), "{e}");
    let e = err("[recording]\n");
    assert!(e.contains("[record]"), "the sections are listed: {e}");
    // Two routers whose names make the same file name.
    let router = |name: &str| ROUTER.replace("\"core\"", &format!("{name:?}"));
    let two = format!(
        "[record]\ndir = \"/r\"\n{}{}",
        router("co/re"),
        router("co_re")
    );
    let e = with_password(|| format!("{:#}", load(&two).unwrap_err()));
    assert!(
        e.contains("routers \"co/re\" and \"co_re\" would both record to co_re.rec"),
        "{e}"
    );
    // Without a recording, the same names are fine.
    with_password(|| load(&two.replace("dir = \"/r\"", ""))).unwrap();
}
