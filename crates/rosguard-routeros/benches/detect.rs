//! `detect`: the daemon's hot path over one connection-table dump of 100k rows: decode each
//! `!re` sentence, parse the reply, build a checked `Connection` and run the per-row check.
//!
//! Reports rows/s (Throughput::Elements). The target is at least 1,000,000 rows/s on one core.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rosguard_core::detect::check;
use rosguard_core::{Detection, Family, Networks};
use rosguard_routeros::connection;
use routeros_proto::{decode_sentence, encode_sentence, Limits, Reply, ReplyKind};

const ROWS: usize = 100_000;

/// Rows as a RouterOS 7 router answers `print` with the daemon's `.proplist`: mostly TCP and
/// UDP, some ICMP, both address formats, and about one row in ten asymmetric.
fn stream() -> Vec<u8> {
    let mut out = Vec::with_capacity(ROWS * 260);
    for i in 0..ROWS {
        let proto = match i % 20 {
            0 => "icmp",
            1..=6 => "udp",
            _ => "tcp",
        };
        let src = format!("192.168.{}.{}", (i / 250) % 250, i % 250 + 2);
        let dst = format!("203.0.{}.{}", (i / 200) % 200, i % 200 + 1);
        let sport = 32768 + i % 28000;
        let dport = [443, 80, 53, 8443, 22, 443, 443][i % 7];
        let asymmetric = i % 10 == 3;
        let (orig, repl) = if asymmetric {
            (4 + i % 9, i % 3)
        } else {
            (i % 97, 3 + i % 89)
        };
        let mut words = vec!["!re".to_string(), format!("=.id=*{:X}", 0x1000 + i)];
        words.push(format!("=protocol={proto}"));
        if proto == "icmp" {
            words.push(format!("=src-address={src}"));
            words.push(format!("=dst-address={dst}"));
        } else if i % 2 == 0 {
            // Older format: port attached.
            words.push(format!("=src-address={src}:{sport}"));
            words.push(format!("=dst-address={dst}:{dport}"));
        } else {
            words.push(format!("=src-address={src}"));
            words.push(format!("=src-port={sport}"));
            words.push(format!("=dst-address={dst}"));
            words.push(format!("=dst-port={dport}"));
        }
        words.push(format!("=orig-packets={orig}"));
        words.push(format!("=repl-packets={repl}"));
        words.push(format!("=orig-bytes={}", orig * 1400));
        words.push(format!("=repl-bytes={}", repl * 1400));
        if proto == "tcp" {
            words.push("=tcp-state=established".into());
        }
        words.push(".tag=7".into());
        encode_sentence(&words, &mut out);
    }
    encode_sentence(["!done", ".tag=7"], &mut out);
    out
}

/// Returns (rows, flagged).
fn run(bytes: &[u8], d: &Detection, inside: &Networks) -> (usize, usize) {
    let limits = Limits::default();
    let mut buf = BytesMut::from(bytes);
    let (mut rows, mut flagged) = (0, 0);
    while let Some(s) = decode_sentence(&mut buf, &limits).expect("valid stream") {
        let reply = Reply::parse(s).expect("valid reply");
        if reply.kind() != ReplyKind::Re {
            continue;
        }
        rows += 1;
        let conn = connection(&reply, Family::V4).expect("valid row");
        if let Some(f) = check(&conn, d, inside) {
            black_box(&f);
            flagged += 1;
        }
    }
    (rows, flagged)
}

fn bench(c: &mut Criterion) {
    let bytes = stream();
    let d = Detection::default();
    let inside = Networks::new(["192.168.0.0/16".parse().expect("valid")]);
    let (rows, flagged) = run(&bytes, &d, &inside);
    assert_eq!(rows, ROWS);
    assert!(
        flagged > ROWS / 50,
        "the stream must exercise the flagged path"
    );

    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(20);
    g.bench_function("decode_parse_check_100k_rows", |b| {
        b.iter(|| run(black_box(&bytes), &d, &inside))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
