//! The conntrack reader against a live kernel: a network namespace of its own (unique per
//! run, deleted on drop), real TCP and UDP exchanges over its loopback, read back as RouterOS
//! rows; one deleted through the reader.
//!
//! Needs root, iproute2, nftables, conntrack-tools and python3 (`.ci/run` installs them, see
//! `lab/README.md`); without them it fails and says what is missing. Waiting for rows polls
//! `conntrack -L` every 100 ms up to a 10 s deadline.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use routeros_sim::{AddressFormat, ConntrackReader, Family, KernelConnection, TcpState};

struct Netns {
    name: String,
    child: Option<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(argv: &[&str], input: Option<&str>) {
    let mut c = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; the kernel tests need root, iproute2, nftables, \
                 conntrack and python3 (see lab/README.md)",
                argv[0]
            )
        });
    if let Some(text) = input {
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?} failed: {}; the kernel tests need root, iproute2, nftables, conntrack and \
         python3 (see lab/README.md)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exchanges, inside the namespace: an established TCP connection over 127.0.0.1 and
/// ::1 with data both ways, kept open; UDP datagrams to a port nobody answers. Prints
/// `ready`, then holds until its stdin closes.
const TRAFFIC: &str = r#"
import socket, sys
conns = []
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.bind((host, 8443)); srv.listen(1)
    cli = socket.create_connection((host, 8443), timeout=5)
    acc, _ = srv.accept()
    for _ in range(3):
        cli.sendall(b"hello" * 100); acc.recv(65536)
        acc.sendall(b"world" * 300); cli.recv(65536)
    conns += [srv, cli, acc]
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((host, 40443))
    for _ in range(5):
        u.sendto(b"x" * 100, (host, 9))
    conns.append(u)
print("ready", flush=True)
sys.stdin.read()
"#;

fn lab_namespace() -> Netns {
    let name = format!("rgk{}-{:x}", std::process::id(), rand_suffix());
    sh(&["ip", "netns", "add", &name], None);
    let mut ns = Netns { name, child: None };
    sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"], None);
    sh(
        &[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_acct=1",
        ],
        None,
    );
    // One stateful rule is what makes a namespace track connections.
    sh(
        &["ip", "netns", "exec", &ns.name, "nft", "-f", "-"],
        Some(
            "table inet t {\n chain output {\n  type filter hook output priority filter;\n  \
             ct state established,related accept\n }\n}\n",
        ),
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", TRAFFIC])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start python3 in the namespace");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    ns.child = Some(child);
    assert_eq!(line.trim(), "ready", "the traffic script did not start");
    ns
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos()
}

/// Polls until `pick` finds a row (10 s deadline).
async fn wait_for(
    reader: &ConntrackReader,
    family: Family,
    what: &str,
    pick: impl Fn(&KernelConnection) -> bool,
) -> KernelConnection {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = reader.read(family).await.expect("conntrack -L");
        assert!(
            dump.errors.is_empty(),
            "unreadable lines: {:?}",
            dump.errors
        );
        if let Some(r) = dump.rows.iter().find(|r| pick(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} row within 10 s; the table:\n{}",
            routeros_sim::render_rows(&dump.rows, AddressFormat::Separate)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn prop(r: &KernelConnection, format: AddressFormat, name: &str) -> Option<String> {
    r.properties(format)
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn live_kernel_rows_read_as_routeros_rows_and_delete() {
    let ns = lab_namespace();
    let reader = ConntrackReader::new(Some(&ns.name)).unwrap();

    for family in [Family::V4, Family::V6] {
        let tcp = wait_for(&reader, family, "established tcp", |r| {
            r.protocol_number == 6 && r.dst_port == Some(8443)
        })
        .await;
        assert_eq!(tcp.tcp_state, Some(TcpState::Established), "{tcp:?}");
        // SYN, ACK, 3 requests (+ ACKs of the answers) out; SYN-ACK, 3 answers (+ ACKs) back.
        assert!(tcp.orig_packets >= 5 && tcp.repl_packets >= 4, "{tcp:?}");
        assert!(tcp.orig_bytes > 1500 && tcp.repl_bytes > 4500, "{tcp:?}");
        assert!(
            tcp.seen_reply && tcp.assured && !tcp.srcnat && !tcp.dstnat,
            "{tcp:?}"
        );
        assert_eq!(
            prop(&tcp, AddressFormat::Separate, "tcp-state").as_deref(),
            Some("established")
        );
        assert_eq!(
            prop(&tcp, AddressFormat::Separate, "dst-port").as_deref(),
            Some("8443")
        );
        let combined = prop(&tcp, AddressFormat::Combined, "dst-address").unwrap();
        let want = match family {
            Family::V4 => "127.0.0.1:8443",
            Family::V6 => "[::1]:8443",
        };
        assert_eq!(combined, want);
        let timeout = prop(&tcp, AddressFormat::Separate, "timeout").unwrap();
        // What is left of the kernel's timeout (5 days once all data is acknowledged, 300 s
        // while some is not), written as a RouterOS duration.
        assert_eq!(
            routeros_proto::parse_duration(&timeout).unwrap(),
            tcp.timeout,
            "{timeout}"
        );
        assert!(tcp.timeout > Duration::from_secs(60), "{timeout}");

        let udp = wait_for(&reader, family, "unanswered udp", |r| {
            r.protocol_number == 17 && r.src_port == Some(40443)
        })
        .await;
        assert_eq!(
            (udp.orig_packets, udp.repl_packets, udp.seen_reply),
            (5, 0, false),
            "{udp:?}"
        );
        assert_eq!(udp.tcp_state, None);

        assert!(reader.delete(&udp).await.unwrap(), "first delete removes");
        assert!(!reader.delete(&udp).await.unwrap(), "second finds nothing");
        let dump = reader.read(family).await.unwrap();
        assert!(
            !dump.rows.iter().any(|r| r.id == udp.id),
            "the deleted row is gone"
        );
        assert!(dump.rows.iter().any(|r| r.id == tcp.id), "the rest stays");
    }
}

#[tokio::test]
async fn a_missing_namespace_is_a_clear_error() {
    let reader = ConntrackReader::new(Some("rgk-no-such-namespace")).unwrap();
    let e = reader.read(Family::V4).await.unwrap_err().to_string();
    assert!(e.contains("rgk-no-such-namespace"), "{e}");
}

fn ns_output(ns: &Netns, argv: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(argv)
        .output()
        .expect("ip netns exec")
}

/// Polls `cond` every 100 ms up to 10 s.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_bridge_serves_kernel_rows_deletes_removed_ones_and_mirrors_blocks() {
    use super::client::{col, Client};

    let ns = lab_namespace();
    let sim = super::start(routeros_sim::SimConfig::default()).await;
    let reader = ConntrackReader::new(Some(&ns.name)).unwrap();
    let mut bridge = routeros_sim::KernelBridge::new(reader.clone(), true);
    bridge.interval = Duration::from_millis(100);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(bridge.run(sim.clone(), stop.clone(), None));
    let mut c = Client::admin(sim.local_addr()).await;

    // The kernel's rows, through the API, with their RouterOS properties.
    let print = [
        "/ip/firewall/connection/print",
        "=.proplist=.id,protocol,dst-port,src-port,tcp-state,orig-packets,repl-packets,seen-reply",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = c.rows(&print).await;
        if col(&rows, "dst-port").contains(&"8443".to_owned())
            && col(&rows, "src-port").contains(&"40443".to_owned())
        {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel's rows not served within 10 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tcp = rows
        .iter()
        .find(|r| r.get_str("dst-port") == Some("8443"))
        .unwrap();
    assert_eq!(tcp.get_str("tcp-state"), Some("established"));
    assert_eq!(tcp.get_str("seen-reply"), Some("true"));
    let udp = rows
        .iter()
        .find(|r| r.get_str("src-port") == Some("40443"))
        .unwrap();
    assert_eq!(
        (udp.get_str("orig-packets"), udp.get_str("repl-packets")),
        (Some("5"), Some("0"))
    );

    // A removal through the API deletes the kernel's entry.
    let id = format!("=.id={}", udp.get_str(".id").unwrap());
    c.call(&["/ip/firewall/connection/remove", &id]).await;
    eventually("the removed row gone from the kernel", || {
        let reader = &reader;
        async move {
            let dump = reader.read(Family::V4).await.unwrap();
            !dump.rows.iter().any(|r| r.src_port == Some(40443))
        }
    })
    .await;

    // A drop rule and a list entry through the API block in the namespace.
    c.call(&[
        "/ip/firewall/filter/add",
        "=chain=output",
        "=action=drop",
        "=dst-address-list=tls_block",
    ])
    .await;
    c.call(&[
        "/ip/firewall/address-list/add",
        "=list=tls_block",
        "=address=127.0.0.2",
    ])
    .await;
    eventually("127.0.0.2 in the mirrored set", || async {
        let out = ns_output(
            &ns,
            &[
                "nft",
                "list",
                "set",
                "inet",
                "rosguard_mirror",
                "tls_block_v4",
            ],
        );
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.2")
    })
    .await;
    let probe = "import socket,sys\ns=socket.socket(); s.settimeout(1)\n\
                 try:\n s.connect((sys.argv[1], 8443)); print('open')\n\
                 except OSError as e: print(type(e).__name__)";
    let reach = |dst: &str| {
        let out = ns_output(&ns, &["python3", "-c", probe, dst]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        reach("127.0.0.2"),
        "TimeoutError",
        "blocked: dropped, no answer"
    );
    assert_eq!(reach("127.0.0.1"), "open", "the rest flows on");

    stop.cancel();
    task.await.unwrap();
    let out = ns_output(&ns, &["nft", "list", "tables"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("rosguard_mirror"),
        "the mirror table is removed when the bridge stops"
    );
}
