//! The lab's interim bridge: a simulator whose connection tables follow a network
//! namespace's kernel conntrack, and whose block list and drop rules are mirrored into that
//! namespace's nftables.
//!
//! ```text
//! cargo run -p routeros-sim --example conntrack_bridge -- --netns NAME \
//!     [--listen 127.0.0.1:0] [--interval-ms 500] [--trace FILE] [--mirror-nft]
//! ```
//!
//! Prints `listening ADDR` once serving, then one JSON line per event on stdout: `blocked`
//! and `unblocked` (an address entering or leaving an address-list, with the time, the list
//! and the comment), `rules` (the nftables drop rules mirrored), `error`. With `--trace`,
//! every kernel row of every poll goes to FILE as JSON with RouterOS property names.
//!
//! It is built only on the simulator's public handle (add, remove, set counters), so it
//! keeps a map from kernel ids to simulator ids: a row whose TCP state changes is re-added
//! under a new id, simulator timeouts are held at one day (the kernel decides when a row
//! goes), and rows removed through the API are not deleted from the kernel. All three are
//! what `SimHandle::sync_connections` and the removal notification will fix, when
//! `rosguard sim --conntrack-netns` replaces this example.
//!
//! Mirroring (`--mirror-nft`): each filter rule added through the API with `action=drop`,
//! `chain=forward|input|output` and a `dst-address-list` or `src-address-list` (what
//! `rosguard firewall --install` adds) becomes `ip daddr @LIST drop` / `ip saddr @LIST drop`
//! (and the ip6 twins) in table `inet rosguard_mirror` of the namespace, and the lists'
//! entries are kept in its sets.

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routeros_sim::{
    AddressFormat, ConntrackReader, Family, KernelConnection, Sim, SimConfig, SimHandle,
};
use tokio::io::AsyncWriteExt as _;

struct Args {
    netns: String,
    listen: SocketAddr,
    interval: Duration,
    trace: Option<std::path::PathBuf>,
    mirror: bool,
}

fn args() -> Args {
    let mut a = Args {
        netns: String::new(),
        listen: "127.0.0.1:0".parse().unwrap(),
        interval: Duration::from_millis(500),
        trace: None,
        mirror: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--netns" => a.netns = val(),
            "--listen" => a.listen = val().parse().unwrap_or_else(|_| die("--listen ADDR:PORT")),
            "--interval-ms" => {
                a.interval = Duration::from_millis(val().parse().unwrap_or_else(|_| die("ms")))
            }
            "--trace" => a.trace = Some(val().into()),
            "--mirror-nft" => a.mirror = true,
            other => die(&format!("unknown argument {other}")),
        }
    }
    if a.netns.is_empty() {
        die("--netns NAME is required");
    }
    a
}

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
        line.push_str(&format!(",{:?}:{:?}", k, v));
    }
    line.push('}');
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// A kernel row as the simulator holds it: its sim id and what it was last set to.
struct Mirrored {
    sim_id: String,
    state: Option<&'static str>,
    counters: (u64, u64),
}

#[derive(Default)]
struct Bridge {
    rows: HashMap<(Family, u32), Mirrored>,
    lists: HashMap<(Family, String), BTreeSet<String>>,
    rules: BTreeSet<String>,
}

impl Bridge {
    fn sync(&mut self, sim: &SimHandle, family: Family, rows: &[KernelConnection]) {
        let mut seen = std::collections::HashSet::new();
        for r in rows {
            let key = (family, r.id);
            seen.insert(key);
            let state = r.tcp_state.map(|s| s.as_str());
            let counters = (r.orig_packets, r.repl_packets);
            match self.rows.get_mut(&key) {
                Some(m) if m.state == state => {
                    if m.counters != counters {
                        sim.set_connection_counters(&m.sim_id, counters.0, counters.1);
                        m.counters = counters;
                    }
                }
                other => {
                    if let Some(m) = other {
                        sim.remove_connection(&m.sim_id);
                    }
                    let mut c = r.to_sim_connection();
                    c.timeout = Duration::from_secs(86_400);
                    let sim_id = sim.add_connection(c);
                    self.rows.insert(
                        key,
                        Mirrored {
                            sim_id,
                            state,
                            counters,
                        },
                    );
                }
            }
        }
        self.rows.retain(|key, m| {
            let keep = key.0 != family || seen.contains(key);
            if !keep {
                sim.remove_connection(&m.sim_id);
            }
            keep
        });
    }
}

/// The nftables statements for the API's drop rules on address-lists.
fn mirror_rules(sim: &SimHandle) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for family in [Family::V4, Family::V6] {
        let (ipkw, suffix) = match family {
            Family::V4 => ("ip", "v4"),
            Family::V6 => ("ip6", "v6"),
        };
        for rule in sim.filter_rules_of(family) {
            let get = |k: &str| rule.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            if get("action") != Some("drop") || get("disabled") == Some("true") {
                continue;
            }
            let Some(chain @ ("forward" | "input" | "output")) = get("chain") else {
                continue;
            };
            for (prop, dir) in [("dst-address-list", "daddr"), ("src-address-list", "saddr")] {
                if let Some(list) = get(prop) {
                    let set = format!("{}_{suffix}", sanitize(list));
                    out.insert(format!("{chain}|{ipkw} {dir} @{set} counter drop"));
                }
            }
        }
    }
    out
}

fn sanitize(list: &str) -> String {
    list.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

async fn nft(netns: &str, script: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "nft did not finish in 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Rebuilds table `inet rosguard_mirror`: one set per list and family, the drop rules.
fn mirror_table(
    rules: &BTreeSet<String>,
    lists: &HashMap<(Family, String), BTreeSet<String>>,
) -> String {
    let mut sets = BTreeSet::new();
    for r in rules {
        if let Some(set) = r
            .split('@')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
        {
            sets.insert(set.to_owned());
        }
    }
    let mut s = String::from("table inet rosguard_mirror\ndelete table inet rosguard_mirror\n");
    s.push_str("table inet rosguard_mirror {\n");
    for set in &sets {
        let ty = if set.ends_with("_v6") {
            "ipv6_addr"
        } else {
            "ipv4_addr"
        };
        s.push_str(&format!("  set {set} {{ type {ty}; flags interval; }}\n"));
    }
    for chain in ["forward", "input", "output"] {
        s.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {chain} priority filter - 10; policy accept;\n"
        ));
        for r in rules.iter().filter(|r| r.starts_with(&format!("{chain}|"))) {
            s.push_str(&format!("    {}\n", &r[chain.len() + 1..]));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    for ((family, list), addrs) in lists {
        let set = format!(
            "{}_{}",
            sanitize(list),
            if *family == Family::V4 { "v4" } else { "v6" }
        );
        if sets.contains(&set) && !addrs.is_empty() {
            let elems: Vec<&str> = addrs.iter().map(String::as_str).collect();
            s.push_str(&format!(
                "add element inet rosguard_mirror {set} {{ {} }}\n",
                elems.join(", ")
            ));
        }
    }
    s
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let reader = ConntrackReader::new(Some(&a.netns)).unwrap_or_else(|e| die(&e.to_string()));
    let sim = Sim::start(SimConfig::default(), a.listen)
        .await
        .unwrap_or_else(|e| die(&format!("cannot listen on {}: {e}", a.listen)));
    let mut trace = a.trace.as_ref().map(|p| {
        std::io::BufWriter::new(
            std::fs::File::create(p).unwrap_or_else(|e| die(&format!("{}: {e}", p.display()))),
        )
    });
    println!("listening {}", sim.local_addr());
    let _ = std::io::stdout().flush();

    let mut bridge = Bridge::default();
    let mut tick = tokio::time::interval(a.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| die(&e.to_string()));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        let t = now();
        for family in [Family::V4, Family::V6] {
            match reader.read(family).await {
                Ok(dump) => {
                    for (line, why) in &dump.errors {
                        event(&[
                            ("event", "error".into()),
                            ("message", format!("line {line}: {why}")),
                        ]);
                    }
                    if let Some(w) = trace.as_mut() {
                        for r in &dump.rows {
                            let mut obj = format!("{{\"t\":{t:.3}");
                            for (k, v) in r.properties(AddressFormat::Separate) {
                                obj.push_str(&format!(",{k:?}:{v:?}"));
                            }
                            obj.push('}');
                            let _ = writeln!(w, "{obj}");
                        }
                        let _ = w.flush();
                    }
                    bridge.sync(&sim, family, &dump.rows);
                }
                Err(e) => event(&[("event", "error".into()), ("message", e.to_string())]),
            }
        }
        // Address-lists rosguard may fill: every list a drop rule names, and tls_block.
        let rules = mirror_rules(&sim);
        let mut names: BTreeSet<String> = ["tls_block".to_owned()].into();
        for family in [Family::V4, Family::V6] {
            for rule in sim.filter_rules_of(family) {
                for (k, v) in rule {
                    if k == "dst-address-list" || k == "src-address-list" {
                        names.insert(v);
                    }
                }
            }
        }
        let mut lists_changed = false;
        for family in [Family::V4, Family::V6] {
            for name in &names {
                let entries = sim.address_list(family, name);
                let now_set: BTreeSet<String> = entries.iter().map(|e| e.address.clone()).collect();
                let before = bridge.lists.entry((family, name.clone())).or_default();
                for e in entries.iter().filter(|e| !before.contains(&e.address)) {
                    event(&[
                        ("event", "blocked".into()),
                        ("list", name.clone()),
                        ("address", e.address.clone()),
                        ("comment", e.comment.clone().unwrap_or_default()),
                    ]);
                }
                for gone in before.difference(&now_set) {
                    event(&[
                        ("event", "unblocked".into()),
                        ("list", name.clone()),
                        ("address", gone.clone()),
                    ]);
                }
                if *before != now_set {
                    lists_changed = true;
                    *before = now_set;
                }
            }
        }
        if a.mirror && (lists_changed || rules != bridge.rules) {
            match nft(&a.netns, &mirror_table(&rules, &bridge.lists)).await {
                Ok(()) => {
                    if rules != bridge.rules {
                        let shown: Vec<String> = rules.iter().cloned().collect();
                        event(&[("event", "rules".into()), ("rules", shown.join("; "))]);
                    }
                    bridge.rules = rules;
                }
                Err(e) => event(&[("event", "error".into()), ("message", format!("nft: {e}"))]),
            }
        }
    }
    if a.mirror {
        let _ = nft(
            &a.netns,
            "table inet rosguard_mirror\ndelete table inet rosguard_mirror\n",
        )
        .await;
    }
    sim.shutdown().await;
}
