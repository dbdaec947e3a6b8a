//! `replay`: what recording costs and how fast a recording replays and tunes, on a modelled
//! router of 10,000 connections polled every 2 s (the default `loop_delay`).
//!
//! The model ([`Router`]) keeps a steady table of 10,000 flows of seven kinds, each replaced
//! by a new one (a new, higher `.id`, at the table's end) when it ends: bulk TCP (a quarter of
//! the table: hundreds of replies at once), short HTTPS exchanges that then sit closing,
//! idle keepalives that move a packet now and then, DNS over UDP, UDP streams, unanswered TCP
//! attempts and inbound SYN noise. Each poll keeps what the recorder's pre-filter keeps
//! ([`Prefilter::reading_settings`] with the default settings: every row `is_candidate`
//! under it). Deterministic: the same seed gives the same day.
//!
//! Targets: replay at least 1,000,000 recorded rows per second on one core; recording adds
//! at most 10% to a cycle's CPU; under 40 bytes per recorded row for a 24 h recording.
//! `ROSGUARD_BENCH_HOURS` (default 24) sets the length of the day measured for bytes per row.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rosguard::admin::{replay_with, sweep, Grid, Point};
use rosguard::recording::{Header, Poll, Prefilter, Reader, Recording, Writer};
use rosguard_core::detect::is_candidate;
use rosguard_core::model::{ConnId, Connection, Endpoint, Family, Protocol, TcpState};
use rosguard_core::observation::Observation;
use rosguard_core::policy::Protected;
use rosguard_core::settings::Settings;

const TABLE: usize = 10_000;
const POLL: f64 = 2.0;

/// xorshift64*: a small deterministic generator, enough for a traffic model.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Downloads, video: replies by the hundred from the first poll.
    Bulk,
    /// An HTTPS request or two, then closing for a few polls.
    Short,
    /// An established keepalive: a packet each way now and then.
    Idle,
    /// One query, one answer.
    Dns,
    /// QUIC, calls: many packets both ways.
    Stream,
    /// A SYN or a ClientHello with no answer, retried.
    Unanswered,
    /// SYNs from the internet at the router's WAN side.
    Noise,
}

/// (kind, share of the table in thousandths, mean life in polls).
const KINDS: [(Kind, u64, u64); 7] = [
    (Kind::Bulk, 250, 60),
    (Kind::Short, 300, 8),
    (Kind::Idle, 200, 600),
    (Kind::Dns, 150, 5),
    (Kind::Stream, 70, 90),
    (Kind::Unanswered, 10, 10),
    (Kind::Noise, 20, 5),
];

struct Flow {
    kind: Kind,
    row: Connection,
    left: u64,
    age: u64,
}

/// The modelled router.
struct Router {
    rng: Rng,
    flows: Vec<Flow>,
    next_id: u64,
    polls: u64,
    reading: Settings,
}

impl Router {
    fn new(seed: u64) -> Self {
        let settings = Settings::default();
        let reading = Prefilter::for_settings(&settings).reading_settings(&settings);
        let mut r = Self {
            rng: Rng(seed | 1),
            flows: Vec::with_capacity(TABLE),
            next_id: 0x1000,
            polls: 0,
            reading,
        };
        for (kind, share, _) in KINDS {
            for _ in 0..TABLE as u64 * share / 1000 {
                let mut f = r.flow(kind);
                // Start the table in its steady state: flows at every age.
                f.age = r.rng.below(f.left);
                f.left -= f.age;
                r.flows.push(f);
            }
        }
        r
    }

    fn flow(&mut self, kind: Kind) -> Flow {
        let life = KINDS.iter().find(|k| k.0 == kind).map_or(10, |k| k.2);
        let n = self.rng.next();
        let lan = IpAddr::from([192, 168, 88, 10 + (n % 200) as u8]);
        let remote = IpAddr::from([
            [203, 198, 192, 100][(n >> 8) as usize % 4],
            (n >> 16) as u8,
            (n >> 24) as u8,
            1 + (n >> 32) as u8 % 250,
        ]);
        let (udp, src, dst, port) = match kind {
            Kind::Dns => (true, lan, IpAddr::from([198, 51, 100, 53]), 53),
            Kind::Stream => (true, lan, remote, 443),
            Kind::Noise => (
                false,
                remote,
                IpAddr::from([198, 51, 100, 2]),
                22 + (n % 3000) as u16,
            ),
            _ => (
                false,
                lan,
                remote,
                [443, 443, 80, 8443][(n >> 40) as usize % 4],
            ),
        };
        self.next_id += 1 + self.rng.below(3);
        Flow {
            kind,
            left: 1 + self.rng.below(2 * life),
            age: 0,
            row: Connection {
                id: ConnId::new(format!("*{:X}", self.next_id)),
                family: Family::V4,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                src: Endpoint {
                    addr: src,
                    port: Some(32768 + (n >> 48) as u16 % 28000),
                },
                dst: Endpoint {
                    addr: dst,
                    port: Some(port),
                },
                orig_packets: Some(1),
                repl_packets: Some(0),
                orig_bytes: Some(60),
                repl_bytes: Some(0),
                orig_fasttrack_packets: None,
                repl_fasttrack_packets: None,
                tcp_state: (!udp).then_some(TcpState::SynSent),
            },
        }
    }

    /// Moves every flow on by one poll and returns what the recorder keeps of the table.
    fn poll(&mut self) -> Poll {
        self.polls += 1;
        // Ended flows leave; as many new ones of their kinds join at the end of the table.
        let ended: Vec<Kind> = self
            .flows
            .iter()
            .filter(|f| f.left == 0)
            .map(|f| f.kind)
            .collect();
        self.flows.retain(|f| f.left > 0);
        for kind in ended {
            let f = self.flow(kind);
            self.flows.push(f);
        }
        for f in &mut self.flows {
            let (o, r, state) = step(&mut self.rng, f.kind, f.age);
            let c = &mut f.row;
            if o + r > 0 {
                c.orig_packets = c.orig_packets.map(|v| v + o);
                c.repl_packets = c.repl_packets.map(|v| v + r);
                c.orig_bytes = c.orig_bytes.map(|v| v + o * 120);
                c.repl_bytes = c.repl_bytes.map(|v| v + r * 900);
            }
            if c.protocol == Protocol::Tcp {
                if let Some(s) = state {
                    c.tcp_state = Some(s);
                }
            }
            f.age += 1;
            f.left -= 1;
        }
        let candidates: Vec<Connection> = self
            .flows
            .iter()
            .filter(|f| is_candidate(&f.row, &self.reading.detection))
            .map(|f| f.row.clone())
            .collect();
        Poll {
            t: 1.8e9 + POLL * self.polls as f64,
            observation: Observation {
                rows_read: candidates.len() as u64,
                table_size: Some(self.flows.len() as u64),
                filtered: true,
                addresses: vec![
                    "192.168.88.1/24".parse().unwrap(),
                    "198.51.100.2/24".parse().unwrap(),
                ],
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
}

/// Packets (orig, repl) a flow of `kind` moves in its poll number `age`, and its new state.
fn step(rng: &mut Rng, kind: Kind, age: u64) -> (u64, u64, Option<TcpState>) {
    match (kind, age) {
        (Kind::Bulk, 0) => (3, 2, Some(TcpState::Established)),
        (Kind::Bulk, _) => (20 + rng.below(200), 100 + rng.below(800), None),
        (Kind::Short, 0) => (4, 3, Some(TcpState::Established)),
        (Kind::Short, 1) => (
            6 + rng.below(10),
            8 + rng.below(20),
            Some(TcpState::TimeWait),
        ),
        (Kind::Idle, 0) => (5, 4, Some(TcpState::Established)),
        (Kind::Idle, _) if rng.below(15) == 0 => (1, 1, None),
        (Kind::Dns, 0) => (0, 1, None),
        (Kind::Stream, _) => (30 + rng.below(60), 30 + rng.below(60), None),
        (Kind::Unanswered, _) if rng.below(3) == 0 => (1, 0, None),
        (Kind::Noise, 0) => (0, 0, None),
        _ => (0, 0, None),
    }
}

fn header() -> Header {
    Header::new(
        "bench",
        Prefilter::for_settings(&Settings::default()),
        1.8e9,
    )
}

/// Counts what is written.
#[derive(Default)]
struct Sink(u64);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes per recorded row over `hours` of the model, and the encoder's time per poll.
fn day(hours: u64) {
    let polls = hours * 3600 / POLL as u64;
    let mut router = Router::new(7);
    let mut w = Writer::new(Sink::default(), &header()).unwrap();
    let mut encoding = Duration::ZERO;
    for _ in 0..polls {
        let p = router.poll();
        let t = Instant::now();
        w.poll(&p).unwrap();
        encoding += t.elapsed();
    }
    eprintln!(
        "recording of {hours} h: {} polls, {} rows ({} per poll), {} bytes: {:.1} bytes per recorded row, {:.0} bytes per poll; encoding {:.2} ms per poll",
        w.polls,
        w.rows,
        w.rows / w.polls.max(1),
        w.bytes,
        w.bytes as f64 / w.rows as f64,
        w.bytes as f64 / w.polls as f64,
        encoding.as_secs_f64() * 1000.0 / w.polls as f64
    );
}

fn bench(c: &mut Criterion) {
    let hours = std::env::var("ROSGUARD_BENCH_HOURS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(24);
    day(hours);

    // An hour of the model, as a file would hold it.
    let mut router = Router::new(11);
    let hour: Vec<Poll> = (0..1800).map(|_| router.poll()).collect();
    let rows: u64 = hour
        .iter()
        .map(|p| p.observation.candidates.len() as u64)
        .sum();
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for p in &hour {
        w.poll(p).unwrap();
    }
    let file = w.into_inner();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings::default();

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(rows));
    g.sample_size(10);
    // `rosguard replay`'s path: decompress, decode, and the daemon's cycle on every poll.
    g.bench_function("one_hour_of_a_10k_router_from_the_file", |b| {
        b.iter(|| {
            let rec = Recording::read(&file[..]).unwrap();
            let out = rt.block_on(replay_with(rec, "bench", &settings)).unwrap();
            assert!(!out.blocks.is_empty());
        })
    });
    // Reading alone: what decoding costs of the above.
    g.bench_function("read_one_hour_of_a_10k_router", |b| {
        b.iter(|| Reader::new(&file[..]).unwrap().count())
    });
    g.finish();

    // Recording: one poll after the one before (the steady state), and the worst case of
    // every row's counters moving.
    let (a, b2) = (&hour[1000], &hour[1001]);
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(b2.observation.candidates.len() as u64));
    g.bench_function("encode_a_poll_of_a_10k_router", |b| {
        let mut w = Writer::new(Sink::default(), &header()).unwrap();
        let mut k = 0;
        b.iter(|| {
            k += 1;
            w.poll(if k % 2 == 0 { a } else { b2 }).unwrap();
        })
    });
    let mut moved = b2.clone();
    for c in &mut moved.observation.candidates {
        c.orig_packets = c.orig_packets.map(|v| v + 1);
    }
    g.bench_function("encode_a_poll_with_every_row_moved", |b| {
        let mut w = Writer::new(Sink::default(), &header()).unwrap();
        let mut k = 0;
        b.iter(|| {
            k += 1;
            w.poll(if k % 2 == 0 { b2 } else { &moved }).unwrap();
        })
    });
    g.finish();

    // Tuning: 24 settings over ten minutes of the model, on one thread.
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for p in &hour[..300] {
        w.poll(p).unwrap();
    }
    let ten = w.into_inner();
    let grid = Grid {
        min_orig_packets: vec![2, 3, 5, 8],
        max_repl_packets: vec![1, 2, 4],
        min_observations: vec![1, 2],
        min_flagged_connections: vec![1],
        window: vec![Duration::from_secs(60)],
    };
    let points = grid.points(Point::of(&settings));
    let mut g = c.benchmark_group("tune");
    g.sample_size(10);
    g.throughput(Throughput::Elements(points.len() as u64 * 300));
    g.bench_function("settings_times_polls_one_thread", |b| {
        b.iter(|| {
            let s = sweep(
                Reader::new(&ten[..]).unwrap(),
                "bench",
                &settings,
                &points,
                None,
                1,
            );
            s.unwrap().settings.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
