//! The Python side: what operators run today (`librouteros`), the original script's algorithm
//! replayed over the API with it, and the chart.
//!
//! The scripts live in this crate's `python/` folder; [`Python::prepare`] checks that
//! `librouteros` and `matplotlib` import and, unless told not to, installs
//! `python/requirements.txt` with pip first. Each script prints one JSON object on stdout and
//! is measured as its own process. This module deliberately does not time anything itself
//! beyond what the scripts report: the clock that matters for the comparison runs inside each
//! client, after its login.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::child::{self, Finished, Spec};

/// The folder of the Python scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A Python interpreter with the benchmark's packages.
#[derive(Debug, Clone)]
pub struct Python {
    exe: String,
    /// `librouteros.__version__` (or the installed distribution's version).
    pub librouteros: String,
    /// `python3 --version`.
    pub version: String,
}

fn import_check(exe: &str) -> Result<String> {
    let out = Command::new(exe)
        .args([
            "-c",
            "import importlib.metadata as m, librouteros, matplotlib; print(m.version('librouteros'))",
        ])
        .output()
        .with_context(|| format!("running {exe}"))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Python {
    /// Finds the packages, installing them with pip first when `install` is set.
    pub fn prepare(exe: &str, install: bool) -> Result<Self> {
        let requirements = scripts_dir().join("requirements.txt");
        let librouteros = match import_check(exe) {
            Ok(v) => v,
            Err(_) if install => {
                eprintln!(
                    "installing the Python side: {exe} -m pip install -r {}",
                    requirements.display()
                );
                let status = Command::new(exe)
                    .args(["-m", "pip", "install", "--quiet", "-r"])
                    .arg(&requirements)
                    .status()
                    .with_context(|| format!("running {exe} -m pip"))?;
                if !status.success() {
                    bail!("pip install -r {} failed", requirements.display());
                }
                import_check(exe)?
            }
            Err(e) => bail!(
                "the Python side needs librouteros and matplotlib ({e}); run `{exe} -m pip install -r {}`, or drop --no-pip",
                requirements.display()
            ),
        };
        let version = Command::new(exe)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            exe: exe.to_owned(),
            librouteros,
            version,
        })
    }

    fn script(&self, name: &str) -> Spec {
        Spec::new(&self.exe).arg(scripts_dir().join(name))
    }

    /// `lr_print.py`: the connection tables printed with librouteros and `proplist`.
    pub fn print_tables(&self, port: u16, proplist: &[&str], log: &Path) -> Result<PrintRun> {
        let spec = self
            .script("lr_print.py")
            .arg("--port")
            .arg(port.to_string())
            .arg("--proplist")
            .arg(proplist.join(","));
        let done = child::run(spec, log)?;
        let out: PrintOut = parse(&done, log, "lr_print.py")?;
        Ok(PrintRun { out, process: done })
    }

    /// `script_replica.py`: find, then per candidate `get`, `find` on the list and `add`.
    pub fn script_replica(
        &self,
        port: u16,
        list: &str,
        filter: &[String],
        log: &Path,
    ) -> Result<ScriptRun> {
        let spec = self
            .script("script_replica.py")
            .arg("--port")
            .arg(port.to_string())
            .arg("--list")
            .arg(list)
            .arg("--filter")
            .arg(serde_json::to_string(filter)?);
        let done = child::run(spec, log)?;
        let out: ScriptOut = parse(&done, log, "script_replica.py")?;
        Ok(ScriptRun { out, process: done })
    }

    /// `chart.py`: the PNG from `results.json`.
    pub fn chart(&self, results: &Path, png: &Path, log: &Path) -> Result<()> {
        let done = child::run(self.script("chart.py").arg(results).arg(png), log)?;
        if done.status != 0 {
            bail!("chart.py failed:\n{}", child::tail(log, 10));
        }
        Ok(())
    }
}

fn parse<T: for<'de> Deserialize<'de>>(done: &Finished, log: &Path, what: &str) -> Result<T> {
    if done.status != 0 {
        bail!(
            "{what} exited with {}; its log ({}) ends with:\n{}",
            done.status,
            log.display(),
            child::tail(log, 10)
        );
    }
    serde_json::from_slice(&done.stdout).with_context(|| format!("reading the output of {what}"))
}

/// What `lr_print.py` reports.
#[derive(Debug, Clone, Deserialize)]
pub struct PrintOut {
    pub rows: u64,
    /// The prints alone, after login.
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct PrintRun {
    pub out: PrintOut,
    pub process: Finished,
}

/// What `script_replica.py` reports.
#[derive(Debug, Clone, Deserialize)]
pub struct ScriptOut {
    /// Rows the first `find` returned.
    pub candidates: u64,
    /// Addresses added to the list.
    pub added: u64,
    /// Candidates whose address was in the list already.
    pub already: u64,
    /// Everything after login.
    pub seconds: f64,
    /// The first `find` alone.
    pub find_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct ScriptRun {
    pub out: ScriptOut,
    pub process: Finished,
}
