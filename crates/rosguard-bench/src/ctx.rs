//! What every benchmark shares: the run's settings and clock ([`Ctx`]), a way to run blocking
//! work off the runtime, and a reproducible random source.
//!
//! It deliberately knows no benchmark: they all use it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use routeros_sim::{GenerateSpec, Sim, SimConfig, SimHandle};

/// What every benchmark needs.
pub struct Ctx {
    pub out: PathBuf,
    pub rosguard: PathBuf,
    pub runs: usize,
    pub seed: u64,
    pub anomaly_share: f64,
    pub ipv6_share: f64,
    pub loop_delay: Duration,
    pub started: Instant,
}

impl Ctx {
    /// A simulator with a generated table of `size` rows on 127.0.0.1, a free port.
    pub async fn start_sim(&self, size: usize) -> Result<SimHandle> {
        let spec = GenerateSpec {
            connections: size,
            anomaly_share: self.anomaly_share,
            seed: self.seed,
            ipv6_share: self.ipv6_share,
        };
        if let Err(e) = spec.validate() {
            bail!("{e}");
        }
        let cfg = SimConfig {
            generate: Some(spec),
            ..SimConfig::default()
        };
        Ok(Sim::start(cfg, "127.0.0.1:0".parse()?).await?)
    }

    /// Runs of the blocking comparison (each needs fresh simulators and writes 1% of the table).
    pub fn act_runs(&self) -> usize {
        self.runs.clamp(1, 3)
    }

    pub fn progress(&self, line: &str) {
        eprintln!("[{:>6.1}s] {line}", self.started.elapsed().as_secs_f64());
    }
}

/// Runs blocking work (a child process) off the runtime, so the simulator keeps serving.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a benchmark thread panicked")?
}

/// SplitMix64: reproducible random phases without a dependency.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
