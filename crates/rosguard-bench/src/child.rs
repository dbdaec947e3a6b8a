//! Child processes measured one at a time: wall time, CPU time and peak RSS of *that* child,
//! read with `wait4`.
//!
//! A child's `ru_maxrss` starts at the high-water RSS of the process that spawned it (Linux
//! carries the parent's figure across `vfork`/`fork` and `execve`), and this harness hosts a
//! simulator that serves million-row tables. So children are not spawned from here: at start
//! the harness launches a copy of itself as a small *spawner* ([`spawner_main`], before any
//! runtime or table exists), and every benchmark child is started, waited for and reaped by it.
//! The floor a child cannot go below is then the spawner's own few MiB, which the harness
//! measures ([`rss_floor_kib`]) and reports.
//!
//! The spawner reads one JSON request per line on stdin and answers one JSON line on stdout:
//! `run` (start, wait, report), `start` (report the pid), `running`, `stop` (SIGTERM, then
//! SIGKILL after a grace period, reap, report). It only ever signals its own children, by pid.
//! This module deliberately knows nothing about what the children are.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The hidden first argument that turns this binary into the spawner.
pub const SPAWNER_ARG: &str = "__spawner";

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Set in the child's environment.
    pub env: Vec<(String, String)>,
    /// Removed from the child's environment.
    pub env_remove: Vec<String>,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.env_remove.push(k.to_owned());
        self
    }
}

/// What a finished child left behind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Finished {
    /// Exit code, or minus the signal number that ended it.
    pub status: i32,
    /// Everything it wrote on stdout (read back from the file the spawner wrote it to).
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// From spawn to reaped.
    pub wall: Duration,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, KiB (`ru_maxrss`).
    pub maxrss_kib: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Run {
        spec: Spec,
        stdout: Option<PathBuf>,
        stderr: PathBuf,
    },
    Start {
        spec: Spec,
        stderr: PathBuf,
    },
    Running {
        pid: u32,
    },
    Stop {
        pid: u32,
        grace_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Finished(Finished),
    Started { pid: u32 },
    Running(bool),
    Error(String),
}

// ---- the spawner process --------------------------------------------------------------------

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

fn decode_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        -1
    }
}

/// `wait4` on one pid; `block = false` returns `None` while it still runs.
fn wait4(pid: u32, block: bool) -> Result<Option<(i32, libc::rusage)>> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; an all-zero value is valid and wait4 overwrites it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: pointers to live locals; pid is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            return Ok(Some((decode_status(status), usage)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
}

fn finished(status: i32, usage: &libc::rusage, started: Instant) -> Finished {
    Finished {
        status,
        stdout: Vec::new(),
        wall: started.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    }
}

fn command(spec: &Spec, stdout: Stdio, stderr: &Path) -> Result<Command> {
    let log = File::create(stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(log));
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

struct Spawner {
    running: Vec<(u32, Child, Instant)>,
}

impl Spawner {
    fn handle(&mut self, req: Request) -> Result<Response> {
        match req {
            Request::Run {
                spec,
                stdout,
                stderr,
            } => {
                let out = match &stdout {
                    Some(p) => Stdio::from(
                        File::create(p).with_context(|| format!("creating {}", p.display()))?,
                    ),
                    None => Stdio::null(),
                };
                let started = Instant::now();
                let child = command(&spec, out, &stderr)?
                    .spawn()
                    .with_context(|| format!("starting {}", spec.program.display()))?;
                let Some((status, usage)) = wait4(child.id(), true)? else {
                    bail!("wait4 returned without a status");
                };
                Ok(Response::Finished(finished(status, &usage, started)))
            }
            Request::Start { spec, stderr } => {
                let started = Instant::now();
                let child = command(&spec, Stdio::null(), &stderr)?
                    .spawn()
                    .with_context(|| format!("starting {}", spec.program.display()))?;
                let pid = child.id();
                self.running.push((pid, child, started));
                Ok(Response::Started { pid })
            }
            Request::Running { pid } => {
                let known = self.running.iter().any(|(p, _, _)| *p == pid);
                Ok(Response::Running(known && is_running(pid)))
            }
            Request::Stop { pid, grace_ms } => {
                let pos = self
                    .running
                    .iter()
                    .position(|(p, _, _)| *p == pid)
                    .ok_or_else(|| anyhow!("no child {pid}"))?;
                let (_, _child, started) = self.running.swap_remove(pos);
                let raw = libc::pid_t::try_from(pid).context("pid out of range")?;
                // SAFETY: signalling our own, not yet reaped, child by its pid.
                unsafe { libc::kill(raw, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_millis(grace_ms);
                loop {
                    if let Some((status, usage)) = wait4(pid, false)? {
                        return Ok(Response::Finished(finished(status, &usage, started)));
                    }
                    if Instant::now() >= deadline {
                        // SAFETY: as above.
                        unsafe { libc::kill(raw, libc::SIGKILL) };
                        let Some((status, usage)) = wait4(pid, true)? else {
                            bail!("wait4 returned without a status");
                        };
                        return Ok(Response::Finished(finished(status, &usage, started)));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// True while the child has not exited; `WNOWAIT` leaves it for `wait4` to reap.
fn is_running(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain old data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to a live local; pid is our own child.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // With WNOHANG, a child that has not exited leaves si_pid at zero.
    // SAFETY: reading the pid field of a siginfo_t that waitid filled.
    r == 0 && unsafe { info.si_pid() } == 0
}

/// The spawner's main loop: until stdin closes. Children still running then are stopped.
pub fn spawner_main() -> ExitCode {
    let mut sp = Spawner {
        running: Vec::new(),
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => sp
                .handle(req)
                .unwrap_or_else(|e| Response::Error(format!("{e:#}"))),
            Err(e) => Response::Error(format!("bad request: {e}")),
        };
        let Ok(text) = serde_json::to_string(&resp) else {
            break;
        };
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    for (pid, _, _) in std::mem::take(&mut sp.running) {
        let _ = sp.handle(Request::Stop {
            pid,
            grace_ms: 5000,
        });
    }
    ExitCode::SUCCESS
}

// ---- the harness side -----------------------------------------------------------------------

struct Link {
    _process: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

static LINK: OnceLock<Mutex<Link>> = OnceLock::new();

/// Launches the spawner. Call first thing in `main`, while this process is still small.
pub fn start_spawner() -> Result<()> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut process = Command::new(exe)
        .arg(SPAWNER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the spawner")?;
    let (Some(stdin), Some(stdout)) = (process.stdin.take(), process.stdout.take()) else {
        bail!("the spawner has no pipes");
    };
    let link = Link {
        _process: process,
        stdin,
        stdout: BufReader::new(stdout),
    };
    LINK.set(Mutex::new(link))
        .map_err(|_| anyhow!("the spawner was started twice"))
}

fn ask(req: &Request) -> Result<Response> {
    let link = LINK
        .get()
        .ok_or_else(|| anyhow!("the spawner is not running"))?;
    let mut link = link
        .lock()
        .map_err(|_| anyhow!("the spawner lock is poisoned"))?;
    let text = serde_json::to_string(req)?;
    writeln!(link.stdin, "{text}").context("writing to the spawner")?;
    link.stdin.flush().context("writing to the spawner")?;
    let mut line = String::new();
    if link
        .stdout
        .read_line(&mut line)
        .context("reading from the spawner")?
        == 0
    {
        bail!("the spawner has gone");
    }
    match serde_json::from_str(&line).context("reading the spawner's answer")? {
        Response::Error(e) => bail!("{e}"),
        r => Ok(r),
    }
}

/// Runs `spec` to the end (stdin closed, stdout captured, stderr to `stderr_log`) and
/// measures it. Blocks.
pub fn run(spec: Spec, stderr_log: &Path) -> Result<Finished> {
    let stdout_file = stderr_log.with_extension("stdout");
    let resp = ask(&Request::Run {
        spec,
        stdout: Some(stdout_file.clone()),
        stderr: stderr_log.to_owned(),
    })?;
    let Response::Finished(mut done) = resp else {
        bail!("unexpected answer from the spawner: {resp:?}");
    };
    done.stdout = std::fs::read(&stdout_file)
        .with_context(|| format!("reading {}", stdout_file.display()))?;
    Ok(done)
}

/// A child that runs until it is told to stop (the daemon).
pub struct Running {
    pid: u32,
}

impl Running {
    /// Starts `spec` with stdin and stdout closed and stderr to `stderr_log`.
    pub fn spawn(spec: Spec, stderr_log: &Path) -> Result<Self> {
        match ask(&Request::Start {
            spec,
            stderr: stderr_log.to_owned(),
        })? {
            Response::Started { pid } => Ok(Self { pid }),
            r => bail!("unexpected answer from the spawner: {r:?}"),
        }
    }

    /// True while the child has not exited.
    pub fn is_running(&self) -> bool {
        matches!(
            ask(&Request::Running { pid: self.pid }),
            Ok(Response::Running(true))
        )
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the child and measures it. Blocks.
    pub fn stop(self, grace: Duration) -> Result<Finished> {
        match ask(&Request::Stop {
            pid: self.pid,
            grace_ms: grace.as_millis() as u64,
        })? {
            Response::Finished(f) => Ok(f),
            r => bail!("unexpected answer from the spawner: {r:?}"),
        }
    }
}

/// The peak RSS a child of the spawner shows however little it uses itself: `true`'s.
pub fn rss_floor_kib() -> Result<u64> {
    let log = std::env::temp_dir().join(format!("rosguard-bench-floor-{}.log", std::process::id()));
    let done = run(Spec::new("true"), &log);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log.with_extension("stdout"));
    Ok(done?.maxrss_kib)
}

/// CPU time (user + system) this process has used so far: the in-process simulator's share.
pub fn self_cpu() -> Duration {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to a live local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
