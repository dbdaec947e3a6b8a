//! `proto_decode`: decoding a realistic stream of connection-table `!re` sentences.
//!
//! Reports MB/s (group `proto_decode_bytes`) and rows/s (group `proto_decode_rows`).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use routeros_proto::{decode_sentence, encode_sentence, Limits, Reply, ReplyKind};

const ROWS: usize = 10_000;

/// Rows shaped like a RouterOS 7 `/ip/firewall/connection/print` with a typical `.proplist`.
fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..ROWS {
        let words = [
            "!re".to_string(),
            format!("=.id=*{:X}", 0x1000 + i),
            "=protocol=tcp".into(),
            format!("=src-address=192.168.{}.{}", (i / 250) % 250, i % 250 + 2),
            format!("=src-port={}", 32768 + i % 28000),
            format!("=dst-address=203.0.{}.{}", (i / 200) % 200, i % 200 + 1),
            "=dst-port=443".into(),
            "=tcp-state=established".into(),
            format!("=orig-packets={}", i % 97),
            format!("=repl-packets={}", i % 89),
            format!("=orig-bytes={}", (i % 97) * 1400),
            format!("=repl-bytes={}", (i % 89) * 1400),
            "=timeout=23h59m52s".into(),
            "=assured=true".into(),
            "=seen-reply=true".into(),
            ".tag=7".into(),
        ];
        encode_sentence(&words, &mut out);
    }
    let mut done = Vec::new();
    encode_sentence(["!done", ".tag=7"], &mut done);
    out.extend_from_slice(&done);
    out
}

fn decode_all(bytes: &[u8]) -> usize {
    let limits = Limits::default();
    let mut buf = BytesMut::from(bytes);
    let mut rows = 0;
    while let Some(s) = decode_sentence(&mut buf, &limits).expect("valid stream") {
        let reply = Reply::parse(s).expect("valid reply");
        if reply.kind() == ReplyKind::Re {
            // Touch the fields the detector reads, as the daemon does.
            let mut sum = 0usize;
            for a in reply.attrs() {
                sum += a.value.len();
            }
            black_box(sum);
            rows += 1;
        }
    }
    rows
}

fn bench(c: &mut Criterion) {
    let bytes = stream();
    assert_eq!(decode_all(&bytes), ROWS);

    let mut g = c.benchmark_group("proto_decode_bytes");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("connection_rows", |b| {
        b.iter(|| decode_all(black_box(&bytes)))
    });
    g.finish();

    let mut g = c.benchmark_group("proto_decode_rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("connection_rows", |b| {
        b.iter(|| decode_all(black_box(&bytes)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
