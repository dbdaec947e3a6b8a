//! Shared helpers: a simulator, a router config pointing at it, one cycle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rosguard::config::{BlockingSettings, DaemonSettings, DetectionSettings, RouterConfig};
use rosguard::cycle::{run_cycle, CycleEnv, CycleReport, RouterState};
use rosguard::daemon::client_config;
use routeros_client::{Client, Secret};
use routeros_sim::{Family, Sim, SimClock, SimConfig, SimConnection, SimHandle};

pub async fn sim_with(cfg: SimConfig) -> SimHandle {
    Sim::start(
        SimConfig {
            clock: SimClock::Manual,
            ..cfg
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("simulator starts")
}

pub async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

pub fn router_for(sim: &SimHandle, name: &str) -> RouterConfig {
    RouterConfig {
        name: name.into(),
        address: sim.local_addr().to_string(),
        username: "admin".into(),
        password: Secret::new(String::new()),
        tls: None,
        detection: DetectionSettings::default(),
        blocking: BlockingSettings::default(),
    }
}

pub fn daemon_settings() -> DaemonSettings {
    DaemonSettings::default()
}

pub fn memory_env() -> CycleEnv {
    let store = rosguard_store::Store::open_in_memory().unwrap();
    CycleEnv {
        store: Some(Arc::new(Mutex::new(store))),
        ..CycleEnv::default()
    }
}

/// A test's connection to one router with rosguard's per-router state.
pub struct Rig {
    pub client: Client,
    pub router: RouterConfig,
    pub daemon: DaemonSettings,
    pub state: RouterState,
    pub env: CycleEnv,
}

impl Rig {
    pub async fn new(router: RouterConfig) -> Self {
        Self::with_env(router, memory_env()).await
    }

    pub async fn with_env(router: RouterConfig, env: CycleEnv) -> Self {
        let client = Client::connect(client_config(&router))
            .await
            .expect("connects to the simulator");
        let state = RouterState::new(&router, &env);
        Self {
            client,
            router,
            daemon: daemon_settings(),
            state,
            env,
        }
    }

    pub async fn cycle(&mut self) -> CycleReport {
        run_cycle(
            &self.client,
            &self.router,
            &self.daemon,
            &mut self.state,
            &self.env,
        )
        .await
        .expect("cycle completes")
    }
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A DPI-frozen TLS flow: orig climbing, repl stuck at 1.
pub fn frozen_tls(src: &str, dst: &str) -> SimConnection {
    SimConnection::tcp(sa(src), sa(dst)).packets(9, 1)
}

/// Addresses in a simulator's address-list.
pub fn list_addresses(sim: &SimHandle, list: &str) -> Vec<String> {
    let mut v: Vec<String> = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| sim.address_list(f, list))
        .map(|e| e.address)
        .collect();
    v.sort();
    v
}
