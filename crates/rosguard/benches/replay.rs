//! `replay`: `rosguard replay`'s throughput (recorded rows per second through the daemon's own
//! cycle on the recording's clock) and what recording costs (encoding one poll, bytes per row).
//!
//! The recording: 60 polls, 2 s apart, of a router whose pre-filtered table holds 10,000 rows
//! (a 10k-connection router's rows with few replies): mostly short healthy flows, one row in a
//! hundred asymmetric; each poll's counters move on. The target is at least 1,000,000 replayed
//! rows per second on one core.

use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rosguard::admin::replay_with;
use rosguard::recording::{Header, Poll, Prefilter, Recording, Writer, FORMAT, VERSION};
use rosguard_core::model::{ConnId, Connection, Endpoint, Family, Protocol, TcpState};
use rosguard_core::observation::Observation;
use rosguard_core::policy::Protected;
use rosguard_core::settings::Settings;

const ROWS: usize = 10_000;
const POLLS: usize = 60;

fn poll(p: usize) -> Poll {
    let mut candidates = Vec::with_capacity(ROWS);
    for i in 0..ROWS {
        let asymmetric = i % 100 == 6;
        let udp = i % 5 == 0;
        let src: IpAddr = format!("192.168.{}.{}", (i / 250) % 4, i % 250 + 2)
            .parse()
            .unwrap();
        let dst: IpAddr = format!("203.0.{}.{}", (i / 200) % 50, i % 200 + 1)
            .parse()
            .unwrap();
        let (orig, repl) = if asymmetric {
            (4 + (p as u64 % 5), 1)
        } else {
            (1 + (i as u64 + p as u64) % 9, 1 + (i as u64 + p as u64) % 9)
        };
        candidates.push(Connection {
            id: ConnId::new(format!("*{:X}", 0x1000 + i)),
            family: Family::V4,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            src: Endpoint {
                addr: src,
                port: Some(32768 + (i % 28000) as u16),
            },
            dst: Endpoint {
                addr: dst,
                port: Some([443, 80, 53, 8443, 443][i % 5]),
            },
            orig_packets: Some(orig),
            repl_packets: Some(repl),
            orig_bytes: Some(orig * 80),
            repl_bytes: Some(repl * 900),
            orig_fasttrack_packets: None,
            repl_fasttrack_packets: None,
            tcp_state: (!udp).then_some(TcpState::Established),
        });
    }
    Poll {
        t: 1.8e9 + 2.0 * p as f64,
        observation: Observation {
            rows_read: ROWS as u64,
            table_size: Some(ROWS as u64 * 2),
            filtered: true,
            addresses: vec!["192.168.88.1/24".parse().unwrap()],
            protected: vec![
                (Protected::Gateway, vec!["198.51.100.1".parse().unwrap()]),
                (Protected::Dns, vec!["198.51.100.53".parse().unwrap()]),
                (Protected::Session, vec!["192.168.88.2".parse().unwrap()]),
            ],
            candidates,
            ..Observation::default()
        },
    }
}

fn header() -> Header {
    Header {
        format: FORMAT.into(),
        version: VERSION,
        router: "bench".into(),
        rosguard: env!("CARGO_PKG_VERSION").into(),
        prefilter: Prefilter::for_settings(&Settings::default()),
        started: 1.8e9,
    }
}

fn bench(c: &mut Criterion) {
    let polls: Vec<Poll> = (0..POLLS).map(poll).collect();
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for p in &polls {
        w.poll(p).unwrap();
    }
    eprintln!(
        "replay bench: {} polls, {} rows, {} bytes: {:.1} bytes per recorded row",
        w.polls,
        w.rows,
        w.bytes,
        w.bytes as f64 / w.rows as f64
    );
    let bytes = w.into_inner();
    let recording = Recording::read(&bytes[..]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings::default();

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements((ROWS * POLLS) as u64));
    g.sample_size(10);
    g.bench_function("60_polls_of_10k_rows", |b| {
        b.iter(|| {
            let out = rt
                .block_on(replay_with(recording.clone(), "bench", &settings))
                .unwrap();
            assert!(!out.blocks.is_empty());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("encode_one_poll_of_10k_rows", |b| {
        let p = &polls[0];
        b.iter(|| {
            let mut w = Writer::new(Vec::with_capacity(1 << 20), &header()).unwrap();
            w.poll(p).unwrap();
            w.bytes
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
