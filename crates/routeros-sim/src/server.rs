//! Starting, observing and stopping a simulator: [`Sim::start`] binds the listener and spawns
//! the accept loop; [`SimHandle`] is the test's remote control (clock, traffic, lists, faults,
//! sessions, stats) and [`SimHandle::shutdown`] joins every task.
//!
//! Sessions run in a `JoinSet` owned by the accept loop; each gets a cancellation token that
//! is a child of the current "session generation" (replaced by `drop_sessions`), itself a
//! child of the root token (cancelled by `shutdown`, or when the last handle is dropped). It
//! deliberately holds no router logic: see `router` and `dispatch`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};

use crate::address_list::{ListChange, ListRemoval, SimListEntry};
use crate::clock::Clock;
use crate::config::{Faults, SimConfig};
use crate::connection::{format_id, parse_id, RemovedConnection, RowStyle, SimConnection};
use crate::error::SimError;
use crate::kinds::Family;
use crate::kinds::SimClock;
use crate::router::{Router, RouterSetup};
use crate::scenario::RouterSettings;
use crate::session;
use crate::shared::{Settings, Shared};
use crate::tls;

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SimStats {
    /// Successful logins.
    pub logins: u64,
    /// Refused logins (bad credentials or `refuse_logins`).
    pub failed_logins: u64,
    /// Commands received (logins included).
    pub commands: u64,
    /// Commands a `Faults::silent` fault left unanswered.
    pub commands_ignored: u64,
    /// Sentences sent.
    pub sentences_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// TCP connections accepted.
    pub sessions_accepted: u64,
    /// Sessions refused by `max_sessions`.
    pub sessions_refused: u64,
    /// Sessions open now.
    pub sessions_active: u64,
}

/// The simulator.
pub struct Sim;

struct CertInfo {
    der: Vec<u8>,
    pem: String,
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    cert: Option<CertInfo>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop serving rather than leak tasks.
        self.shared.root().cancel();
    }
}

/// A running simulator. Cheap to clone; every clone controls the same simulator.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("local_addr", &self.inner.local_addr)
            .field("tls", &self.inner.cert.is_some())
            .finish()
    }
}

impl Sim {
    /// Binds `listen` (use port 0 for a free port) and starts serving.
    pub async fn start(cfg: SimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
        Ok(Self::try_start(cfg, listen).await?)
    }

    async fn try_start(cfg: SimConfig, listen: SocketAddr) -> Result<SimHandle, SimError> {
        if cfg.users.is_empty() {
            return Err(SimError::Config("no users: nobody could log in".into()));
        }
        let (flows, seeds, scenario_gen, scenario_router) = match cfg.scenario {
            Some(s) => (s.flows, s.allowlist, s.generate, s.router),
            None => (Vec::new(), Vec::new(), None, RouterSettings::default()),
        };
        let generate = cfg.generate.or(scenario_gen);
        if let Some(g) = &generate {
            g.validate().map_err(SimError::Config)?;
        }
        let tls = cfg.tls.as_ref().map(tls::load).transpose()?;
        let setup = RouterSetup {
            addresses: cfg.router_addresses,
            version: cfg.version,
            ipv4_gateway: cfg.ipv4_gateway.or(scenario_router.ipv4_gateway),
            ipv6_gateway: cfg
                .ipv6_gateway
                .or(scenario_router.ipv6_gateway)
                .unwrap_or(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            dns_servers: cfg
                .dns_servers
                .or(scenario_router.dns_servers)
                .unwrap_or_else(|| vec![IpAddr::from([1, 1, 1, 1]), IpAddr::from([9, 9, 9, 9])]),
            dynamic_dns_servers: cfg
                .dynamic_dns_servers
                .or(scenario_router.dynamic_dns_servers)
                .unwrap_or_default(),
        };
        let router = Router::new(setup, flows, generate, &seeds).map_err(SimError::Config)?;
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let settings = Settings {
            users: cfg.users,
            row_style: RowStyle {
                format: cfg.address_format,
                fasttrack: cfg.fasttrack_counters,
            },
            query_compare: cfg.query_compare,
            empty_replies: cfg.empty_replies,
            legacy_login: cfg.legacy_login,
            limits: cfg.limits,
            max_sessions: cfg.max_sessions,
            session_address: cfg.session_address.or(scenario_router.session_address),
        };
        let shared = Arc::new(Shared::new(
            settings,
            Clock::new(cfg.clock),
            router,
            cfg.faults,
        ));
        let (acceptor, cert) = match tls {
            Some(m) => (
                Some(m.acceptor),
                Some(CertInfo {
                    der: m.cert_der,
                    pem: m.cert_pem,
                }),
            ),
            None => (None, None),
        };
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), acceptor));
        tracing::info!(%local_addr, tls = cert.is_some(), "routeros-sim listening");
        Ok(SimHandle {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                cert,
                accept: Mutex::new(Some(accept)),
            }),
        })
    }
}

/// How often a real-clock simulator catches up with time (expiring list entries, firewall
/// rules reacting to traffic).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut sessions = JoinSet::new();
    // With the real clock time moves by itself: catch up with it now and then (a manual
    // clock catches up in `advance`).
    let real_clock = shared.clock.kind() == SimClock::Real;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.root().cancelled() => break,
            _ = housekeeping.tick(), if real_clock => {
                let now = shared.clock.now();
                shared.router().housekeep(now);
            }
            Some(res) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = res {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a session task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let token = shared.session_token();
                    sessions.spawn(session::serve(sock, peer, tls.clone(), shared.clone(), token));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = shared.root().cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    while let Some(res) = sessions.join_next().await {
        if let Err(e) = res {
            if e.is_panic() {
                tracing::error!(error = %e, "a session task panicked");
            }
        }
    }
}

impl SimHandle {
    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The TLS certificate (DER), when serving TLS.
    pub fn tls_cert_der(&self) -> Option<Vec<u8>> {
        self.inner.cert.as_ref().map(|c| c.der.clone())
    }

    /// The TLS certificate (PEM), when serving TLS: write it to a file to use as a CA file.
    pub fn tls_cert_pem(&self) -> Option<String> {
        self.inner.cert.as_ref().map(|c| c.pem.clone())
    }

    /// The TLS certificate's SHA-256 fingerprint as `AB:CD:...`, when serving TLS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.inner.cert.as_ref().map(|c| tls::fingerprint(&c.der))
    }

    /// Simulates a reboot: timed (dynamic) address-list entries vanish, the connection table
    /// resets, uptime restarts, and every session is dropped.
    pub fn reboot(&self) {
        let now = self.shared().clock.now();
        self.shared().router().reboot(now);
        self.drop_sessions();
    }

    /// Closes every client connection now (the server keeps accepting).
    pub fn drop_sessions(&self) {
        self.shared().drop_sessions();
    }

    /// Moves the simulator's clock forward (with `SimClock::Real`, adds to real time), then
    /// catches up with it: entries whose timeout ran out leave their lists (and observers of
    /// `list_changes` hear of it) before this returns.
    pub fn advance(&self, d: Duration) {
        self.shared().clock.advance(d);
        let now = self.shared().clock.now();
        self.shared().router().housekeep(now);
    }

    /// Makes the connection table of `family` exactly `conns`, for an external source of
    /// connections (a bridge from the kernel's conntrack, a replay of a recording) that calls
    /// it whenever its view changes. A row whose 5-tuple (protocol, source and destination
    /// address and port, see [`SimConnection::tuple`]) is in the table now keeps its `.id`;
    /// other rows get fresh ids; rows not given are gone. From the first call on, the family's
    /// generated and scenario rows stay gone: the source owns the table. Counters are taken
    /// as given (they grow at the given rates until the next call). Returns the ids in the
    /// order of `conns`; refuses (changing nothing) when a row is of the other family.
    pub fn sync_connections(
        &self,
        family: Family,
        conns: Vec<SimConnection>,
    ) -> Result<Vec<String>, SimError> {
        if let Some((i, c)) = conns.iter().enumerate().find(|(_, c)| c.family() != family) {
            return Err(SimError::Config(format!(
                "sync_connections({family:?}): row {i} ({} -> {}) is of the other family",
                c.src, c.dst
            )));
        }
        let now = self.shared().clock.now();
        let ids = self.shared().router().conns.sync(family, conns, now);
        Ok(ids.into_iter().map(format_id).collect())
    }

    /// A receiver of every connection a client removes through the API
    /// (`/ip/firewall/connection/remove`, `/ipv6/...`), from now on, so the owner of an
    /// external source can drop the same flow there. Removals by the handle, timeouts and
    /// reboots are not reported. At most [`REMOVAL_BACKLOG`](crate::REMOVAL_BACKLOG) wait unread; a receiver further
    /// behind gets `RecvError::Lagged`.
    pub fn removed_connections(&self) -> broadcast::Receiver<RemovedConnection> {
        self.shared().removals.subscribe()
    }

    /// A receiver of every address-list change from now on, in order: entries added (by a
    /// client, the handle or a firewall rule), changed by `set`, removed (by a client, the
    /// handle, a reboot, or expiry; expiry is noticed when the simulator next looks at its
    /// lists: any command, handle call or `advance`, and at least once a second with the real
    /// clock). At most [`LIST_CHANGE_BACKLOG`](crate::LIST_CHANGE_BACKLOG) wait unread; a receiver further behind gets
    /// `RecvError::Lagged` and should re-read the lists with `address_lists`.
    pub fn list_changes(&self) -> broadcast::Receiver<ListChange> {
        self.shared().subscribe_list_changes()
    }

    /// Every live entry of every list of one family, in `.id` order.
    pub fn address_lists(&self, family: Family) -> Vec<SimListEntry> {
        let shared = self.shared();
        let now = shared.clock.now();
        let mut r = shared.router();
        let lists = r.lists(family);
        lists.purge(now);
        lists
            .entries()
            .map(|e| SimListEntry::of(e, now, &shared.clock))
            .collect()
    }

    /// Removes an address-list entry by `.id`; `false` when there is none.
    pub fn remove_list_entry(&self, family: Family, id: &str) -> bool {
        let now = self.shared().clock.now();
        parse_id(id).is_some_and(|id| {
            self.shared()
                .router()
                .lists(family)
                .remove(id, ListRemoval::Handle, now)
        })
    }

    /// Sim time since start.
    pub fn now(&self) -> Duration {
        self.shared().clock.now()
    }

    /// Returns once sim time is `at` or later: with the real clock when that time comes (or
    /// an [`advance`](Self::advance) passes it), with the manual clock only when an `advance`
    /// does. A source that plays on the simulator's time (a replay of a recording) waits
    /// here, so a test drives it with `advance` and no sleeps.
    pub async fn sleep_until(&self, at: Duration) {
        self.shared().clock.wait_until(at).await;
    }

    /// Makes `/ip/firewall/connection/tracking` report `total-entries` as `n` instead of
    /// counting the table (`None`: count again), for a source that serves part of a bigger
    /// table (a recording keeps only the rows rosguard could flag). `count-only` prints still
    /// count the rows served.
    pub fn set_table_size(&self, n: Option<u64>) {
        self.shared().router().set_reported_total(n);
    }

    /// Adds a connection to the table of its family; returns its `.id`.
    pub fn add_connection(&self, c: SimConnection) -> String {
        let now = self.shared().clock.now();
        format_id(self.shared().router().conns.add(c, now))
    }

    /// Removes a connection (no effect when the id does not exist).
    pub fn remove_connection(&self, id: &str) {
        if let Some(id) = parse_id(id) {
            let now = self.shared().clock.now();
            self.shared().router().conns.remove(id, now);
        }
    }

    /// Sets a connection's packet counters (they keep growing at the connection's rates).
    pub fn set_connection_counters(&self, id: &str, orig_packets: u64, repl_packets: u64) {
        if let Some(id) = parse_id(id) {
            let now = self.shared().clock.now();
            self.shared()
                .router()
                .conns
                .set_counters(id, orig_packets, repl_packets, now);
        }
    }

    /// The live entries of one address-list.
    pub fn address_list(&self, family: Family, list: &str) -> Vec<SimListEntry> {
        let shared = self.shared();
        let now = shared.clock.now();
        let mut r = shared.router();
        let lists = r.lists(family);
        lists.purge(now);
        lists
            .entries()
            .filter(|e| e.list == list)
            .map(|e| SimListEntry::of(e, now, &shared.clock))
            .collect()
    }

    /// Whether `list` holds `address` now. Cheap at any list size (a hash lookup, no copy of
    /// the list), so a benchmark can poll it every few milliseconds.
    pub fn list_contains(&self, family: Family, list: &str, address: &str) -> bool {
        let now = self.shared().clock.now();
        self.shared().router().lists(family).has(list, address, now)
    }

    /// Adds an address-list entry (e.g. to seed the allowlist). Returns its `.id`, or `None`
    /// (and logs why) when the router would refuse it.
    pub fn add_list_entry(
        &self,
        family: Family,
        list: &str,
        address: &str,
        timeout: Option<Duration>,
        comment: Option<&str>,
    ) -> Option<String> {
        self.add_list_entry_as(family, list, address, timeout, comment, false)
    }

    /// [`add_list_entry`](Self::add_list_entry), disabled or not (`disabled=true` rows are
    /// listed but match nothing on a router).
    pub fn add_list_entry_as(
        &self,
        family: Family,
        list: &str,
        address: &str,
        timeout: Option<Duration>,
        comment: Option<&str>,
        disabled: bool,
    ) -> Option<String> {
        let now = self.shared().clock.now();
        let r = self.shared().router().lists(family).add(
            list,
            address,
            timeout,
            comment.map(str::to_owned),
            disabled,
            now,
        );
        match r {
            Ok(id) => Some(format_id(id)),
            Err(e) => {
                tracing::warn!(list, address, error = ?e, "add_list_entry refused");
                None
            }
        }
    }

    /// The IPv4 filter rules as printed (`.id` first).
    pub fn filter_rules(&self) -> Vec<Vec<(String, String)>> {
        self.filter_rules_of(Family::V4)
    }

    /// The filter rules of one family as printed.
    pub fn filter_rules_of(&self, family: Family) -> Vec<Vec<(String, String)>> {
        self.shared().router().filters_ref(family).rows()
    }

    /// Replaces the injected faults (takes effect at the next sentence).
    pub fn set_faults(&self, faults: Faults) {
        self.shared().set_faults(faults);
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        let c = &self.shared().stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            logins: l(&c.logins),
            failed_logins: l(&c.failed_logins),
            commands: l(&c.commands),
            commands_ignored: l(&c.commands_ignored),
            sentences_sent: l(&c.sentences_sent),
            bytes_sent: l(&c.bytes_sent),
            bytes_received: l(&c.bytes_received),
            sessions_accepted: l(&c.sessions_accepted),
            sessions_refused: l(&c.sessions_refused),
            sessions_active: l(&c.sessions_active),
        }
    }

    /// Stops accepting, closes every session and waits for every task to finish.
    pub async fn shutdown(self) {
        self.shared().root().cancel();
        let task = self
            .inner
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = task {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "accept loop failed");
            }
        }
    }
}
