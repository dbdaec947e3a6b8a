//! The large-table generator: determinism, anomaly share, streaming with backpressure.

use std::time::Duration;

use routeros_proto::{encoded_length_len, ReplyKind};
use routeros_sim::{Faults, GenerateSpec, SimConfig, SimConnection, SimHandle};

use crate::client::{col, kinds, Client};
use crate::{manual, start};

fn spec(connections: usize, seed: u64) -> GenerateSpec {
    GenerateSpec {
        connections,
        anomaly_share: 0.02,
        seed,
        ipv6_share: 0.1,
    }
}

async fn sim_with(spec: GenerateSpec) -> SimHandle {
    start(SimConfig {
        generate: Some(spec),
        ..manual()
    })
    .await
}

async fn dump(sim: &SimHandle, path: &str) -> Vec<String> {
    let mut c = Client::admin(sim.local_addr()).await;
    c.rows(&[path])
        .await
        .iter()
        .map(|r| format!("{:?}", r.sentence()))
        .collect()
}

#[tokio::test]
async fn same_seed_same_table() {
    let a = sim_with(spec(5_000, 11)).await;
    let b = sim_with(spec(5_000, 11)).await;
    let c = sim_with(spec(5_000, 12)).await;
    for sim in [&a, &b, &c] {
        sim.advance(Duration::from_secs(30));
    }
    for path in [
        "/ip/firewall/connection/print",
        "/ipv6/firewall/connection/print",
    ] {
        let (ra, rb, rc) = (
            dump(&a, path).await,
            dump(&b, path).await,
            dump(&c, path).await,
        );
        assert!(!ra.is_empty());
        assert_eq!(ra, rb, "{path}");
        assert_ne!(ra, rc, "{path}");
    }
    for sim in [a, b, c] {
        sim.shutdown().await;
    }
}

async fn count(c: &mut Client, words: &[&str]) -> u64 {
    let r = c.call(words).await;
    assert_eq!(kinds(&r), [ReplyKind::Done], "{r:?}");
    r[0].ret().unwrap().parse().unwrap()
}

#[tokio::test]
async fn anomaly_and_ipv6_shares_hold() {
    let n = 100_000u64;
    let sim = sim_with(spec(n as usize, 3)).await;
    let mut c = Client::admin(sim.local_addr()).await;
    let flagged = ["=count-only=", "?>orig-packets=3", "?<repl-packets=3"];
    let mut total_flagged = 0;
    let mut total = 0;
    let mut v6 = 0;
    for path in [
        "/ip/firewall/connection/print",
        "/ipv6/firewall/connection/print",
    ] {
        let mut words = vec![path];
        words.extend_from_slice(&flagged);
        total_flagged += count(&mut c, &words).await;
        let all = count(&mut c, &[path, "=count-only="]).await;
        total += all;
        if path.starts_with("/ipv6") {
            v6 = all;
        }
    }
    assert_eq!(total, n);
    let share = total_flagged as f64 / n as f64;
    assert!((0.017..=0.023).contains(&share), "anomaly share {share}");
    let v6_share = v6 as f64 / n as f64;
    assert!((0.09..=0.11).contains(&v6_share), "ipv6 share {v6_share}");
    sim.shutdown().await;
}

const TRACKING: &str = "/ip/firewall/connection/tracking/print";

async fn total(c: &mut Client) -> u64 {
    let rows = c.rows(&[TRACKING]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    col(&rows, "total-entries")[0].parse().unwrap()
}

async fn tables(c: &mut Client) -> u64 {
    count(c, &["/ip/firewall/connection/print", "=count-only="]).await
        + count(c, &["/ipv6/firewall/connection/print", "=count-only="]).await
}

#[tokio::test]
async fn total_entries_counts_both_tables() {
    let sim = sim_with(spec(20_000, 5)).await;
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(total(&mut c).await, 20_000);

    // Removed rows leave, added ones (IPv6 too) join, timed-out ones leave.
    let ids = col(
        &c.rows(&[
            "/ip/firewall/connection/print",
            "=.proplist=.id",
            "?>orig-packets=3",
        ])
        .await,
        ".id",
    );
    let removed = ids.len().min(3);
    c.call(&[
        "/ip/firewall/connection/remove",
        &format!("=.id={}", ids[..removed].join(",")),
    ])
    .await;
    sim.add_connection(
        SimConnection::udp(
            "[fd00::5]:5000".parse().unwrap(),
            "[2001:db8::9]:443".parse().unwrap(),
        )
        .packets(1, 0),
    );
    let expect = 20_000 - removed as u64 + 1;
    assert_eq!(total(&mut c).await, expect);
    assert_eq!(tables(&mut c).await, expect);
    sim.advance(Duration::from_secs(3600));
    assert_eq!(total(&mut c).await, tables(&mut c).await);
    assert_eq!(
        total(&mut c).await,
        expect - 1,
        "the idle UDP flow timed out"
    );

    // A router that does not report it: the settings without the totals.
    sim.set_faults(Faults {
        hide_tracking_totals: true,
        ..Faults::default()
    });
    let rows = c.rows(&[TRACKING]).await;
    assert_eq!(col(&rows, "total-entries"), ["<absent>"]);
    assert_eq!(col(&rows, "tcp-established-timeout"), ["1d"]);
    sim.shutdown().await;
}

/// The most bytes the kernel may hold for one loopback connection on the sending side
/// (`tcp_wmem`'s maximum on Linux; a generous guess elsewhere).
pub fn max_send_buffer() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(16 * 1024 * 1024)
}

/// The bytes a reply takes on the wire.
pub fn wire_len(r: &routeros_proto::Reply) -> u64 {
    let words: u64 = r
        .sentence()
        .words()
        .map(|w| (encoded_length_len(w.len() as u32) + w.len()) as u64)
        .sum();
    words + 1
}

/// A big print streams: however the two sides are scheduled, the simulator is never further
/// ahead of what the client has read than the socket buffers and its own write buffer can
/// hold. A simulator that produced the table before writing it (or wrote into an unbounded
/// buffer) would be up to the whole table ahead when the first row arrives.
#[tokio::test]
async fn a_big_print_streams_with_backpressure() {
    let n = 200_000u64;
    let sim = start(SimConfig {
        generate: Some(GenerateSpec {
            connections: n as usize,
            ipv6_share: 0.0,
            ..GenerateSpec::default()
        }),
        ..manual()
    })
    .await;
    // A small, fixed receive buffer (no autotuning) on the client side.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    // What the kernel actually gave (Linux doubles the request).
    let recv_buffer = u64::from(socket.recv_buffer_size().unwrap());
    let stream = socket.connect(sim.local_addr()).await.unwrap();
    let mut c = Client::over(Box::new(stream));
    c.login("admin", "").await;
    let base = sim.stats().sentences_sent;
    c.send(&["/ip/firewall/connection/print", ".tag=big"]).await;
    let mut received = 0u64;
    let mut max_lead = 0u64;
    let mut min_row = u64::MAX;
    loop {
        let r = c.read().await;
        assert_eq!(r.tag(), Some("big"));
        match r.kind() {
            ReplyKind::Re => {
                received += 1;
                min_row = min_row.min(wire_len(&r));
                let produced = sim.stats().sentences_sent - base;
                max_lead = max_lead.max(produced.saturating_sub(received));
            }
            ReplyKind::Done => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, n);
    // In flight at most: the sender's socket buffer, the receiver's, the simulator's write
    // buffer (flushed at 64 KiB, plus one row) and the test client's read buffer (64 KiB
    // reads); every row takes at least `min_row` bytes.
    let in_flight = max_send_buffer() + 2 * recv_buffer + 2 * (64 * 1024 + min_row) + 64 * 1024;
    let bound = in_flight / min_row;
    assert!(
        bound < n / 4,
        "this machine's socket buffers ({in_flight} bytes, {bound} rows) are too big for \
         {n} rows to show streaming"
    );
    assert!(
        max_lead <= bound,
        "the simulator ran {max_lead} rows ahead of the client (at most {bound} fit in the \
         buffers): it does not stream with backpressure"
    );
    sim.shutdown().await;
}

/// `?.id=*X` alone is answered by a direct lookup: the same row as the full print shows, in its
/// own family only, and nothing for an id that does not exist.
#[tokio::test]
async fn print_by_id_is_the_row_of_the_full_print() {
    let sim = sim_with(spec(2_000, 5)).await;
    let mut c = Client::admin(sim.local_addr()).await;
    let v4 = "/ip/firewall/connection/print";
    let v6 = "/ipv6/firewall/connection/print";
    let all = c.rows(&[v4]).await;
    for row in all.iter().step_by(97) {
        let id = row.get_str(".id").unwrap();
        let one = c.rows(&[v4, &format!("?.id={id}")]).await;
        assert_eq!(one.len(), 1, "{id}");
        assert_eq!(
            one[0].attrs().collect::<Vec<_>>(),
            row.attrs().collect::<Vec<_>>()
        );
        assert!(
            c.rows(&[v6, &format!("?.id={id}")]).await.is_empty(),
            "{id}"
        );
        let proj = c
            .rows(&[v4, "=.proplist=orig-packets", &format!("?=.id={id}")])
            .await;
        assert_eq!(proj[0].get_str("orig-packets"), row.get_str("orig-packets"));
    }
    assert!(c.rows(&[v4, "?.id=*FFFFFF"]).await.is_empty());
    assert_eq!(
        count(&mut c, &[v4, "=count-only=", "?.id=*1"]).await,
        u64::from(all[0].get_str(".id") == Some("*1"))
    );
    sim.shutdown().await;
}
