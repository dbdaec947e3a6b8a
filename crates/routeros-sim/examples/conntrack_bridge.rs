//! The lab's instrumented front-end to [`KernelBridge`]: what `rosguard sim --conntrack-netns
//! NAME --mirror-nft` serves, plus a record of it for scoring.
//!
//! ```text
//! cargo run -p routeros-sim --example conntrack_bridge -- --netns NAME \
//!     [--listen 127.0.0.1:0] [--interval-ms 500] [--trace FILE] [--mirror-nft] \
//!     [--dns-server IP]... [--ipv6-gateway IP]
//! ```
//!
//! Prints `listening ADDR` once serving, then one JSON line per event on stdout: `blocked`
//! and `unblocked` (an address entering or leaving an address-list, with the list and the
//! comment), `rules` (the nftables mirror applied), `deleted` (a removal through the API that
//! reached the kernel), `error`. With `--trace`, every kernel row of every poll goes to FILE
//! as one JSON object with RouterOS property names and the time `t`.

use std::io::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routeros_sim::{
    AddressFormat, BridgeEvent, ConntrackReader, KernelBridge, ListChange, Sim, SimConfig,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

fn die(msg: &str) -> ! {
    eprintln!("conntrack_bridge: {msg}");
    std::process::exit(2)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn event(fields: &[(&str, String)]) {
    let mut line = format!("{{\"t\":{:.3}", now());
    for (k, v) in fields {
        line.push_str(&format!(",{k:?}:{v:?}"));
    }
    line.push('}');
    println!("{line}");
    let _ = std::io::stdout().flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut netns, mut listen, mut trace_path, mut mirror) = (
        None,
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        None,
        false,
    );
    let mut interval = Duration::from_millis(500);
    let mut cfg = SimConfig::default();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--netns" => netns = Some(val()),
            "--listen" => listen = val().parse().unwrap_or_else(|_| die("--listen ADDR:PORT")),
            "--interval-ms" => {
                interval = Duration::from_millis(val().parse().unwrap_or_else(|_| die("ms")))
            }
            "--trace" => trace_path = Some(val()),
            "--mirror-nft" => mirror = true,
            "--dns-server" => cfg.dns_servers.get_or_insert_with(Vec::new).push(
                val()
                    .parse::<IpAddr>()
                    .unwrap_or_else(|_| die("--dns-server IP")),
            ),
            "--ipv6-gateway" => {
                cfg.ipv6_gateway = Some(
                    val()
                        .parse::<Ipv6Addr>()
                        .unwrap_or_else(|_| die("--ipv6-gateway IP")),
                )
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    let netns = netns.unwrap_or_else(|| die("--netns NAME is required"));
    let reader = ConntrackReader::new(Some(&netns)).unwrap_or_else(|e| die(&e.to_string()));
    let sim = Sim::start(cfg, listen)
        .await
        .unwrap_or_else(|e| die(&format!("cannot listen on {listen}: {e}")));
    let mut trace = trace_path.map(|p| {
        std::io::BufWriter::new(
            std::fs::File::create(&p).unwrap_or_else(|e| die(&format!("{p}: {e}"))),
        )
    });
    let mut changes = sim.list_changes();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut bridge = KernelBridge::new(reader, mirror);
    bridge.interval = interval;
    let task = tokio::spawn(bridge.run(sim.clone(), stop.clone(), Some(tx)));
    println!("listening {}", sim.local_addr());
    let _ = std::io::stdout().flush();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| die(&e.to_string()));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            c = changes.recv() => match c {
                Ok(ListChange::Added { entry, .. }) => event(&[
                    ("event", "blocked".into()),
                    ("list", entry.list),
                    ("address", entry.address),
                    ("comment", entry.comment.unwrap_or_default()),
                ]),
                Ok(ListChange::Removed { entry, .. }) => event(&[
                    ("event", "unblocked".into()),
                    ("list", entry.list),
                    ("address", entry.address),
                ]),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    event(&[("event", "error".into()), ("message", format!("missed {n} list changes"))])
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            e = rx.recv() => match e {
                Some(BridgeEvent::Rows { rows, .. }) => {
                    if let Some(w) = trace.as_mut() {
                        let t = now();
                        for r in &rows {
                            let mut obj = format!("{{\"t\":{t:.3},\"kernel-id\":{}", r.id);
                            for (k, v) in r.properties(AddressFormat::Separate) {
                                obj.push_str(&format!(",{k:?}:{v:?}"));
                            }
                            obj.push('}');
                            let _ = writeln!(w, "{obj}");
                        }
                        let _ = w.flush();
                    }
                }
                Some(BridgeEvent::Mirrored { rules, addresses }) => event(&[
                    ("event", "rules".into()),
                    ("rules", rules.join("; ")),
                    ("addresses", addresses.to_string()),
                ]),
                Some(BridgeEvent::Deleted { tuple, found }) => event(&[
                    ("event", "deleted".into()),
                    ("tuple", format!("{:?} {}:{:?} -> {}:{:?}", tuple.protocol, tuple.src,
                                      tuple.src_port, tuple.dst, tuple.dst_port)),
                    ("found", found.to_string()),
                ]),
                Some(BridgeEvent::Error(m)) => event(&[("event", "error".into()), ("message", m)]),
                Some(_) => {}
                None => break,
            },
        }
    }
    stop.cancel();
    let _ = task.await;
    sim.shutdown().await;
}
