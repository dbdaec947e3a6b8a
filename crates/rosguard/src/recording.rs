//! Recordings of a router's polls, and a [`Backend`] that plays them back.
//!
//! A recording is what a poll read under a loose pre-filter ([`Prefilter`]): every row any
//! sensible setting could flag, plus the context `decide()` needs (the router's addresses,
//! protected addresses, allowlist, block list, table size) and the poll's time. Replaying it
//! through the same cycle the daemon runs, on the recording's clock, shows what a setting would
//! have blocked.
//!
//! ## File format, version 1
//!
//! A sequence of gzip members (RFC 1952), each holding one line of JSON ending in `\n`:
//! - the first, the [`Header`]: `{"format":"rosguard-recording","version":1,"router":..,
//!   "rosguard":..,"prefilter":{..},"started":..}`;
//! - then one [`Poll`] per line: `{"t":<seconds since the UNIX epoch, fractional>,
//!   "observation":{..}}`, the observation as [`Observation`] serialises it.
//!
//! Every poll is its own member, written and flushed whole, so a recorder killed mid-write
//! leaves a file readable up to its last complete poll ([`Recording::read`] says it was cut).
//! `zcat FILE` shows it as JSON lines. A reader refuses a newer version.
//!
//! It deliberately decides nothing: the replay runs `run_cycle` and `decide()` unchanged.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use ipnet::IpNet;
use rosguard_core::backend::Backend;
use rosguard_core::decide::Decision;
use rosguard_core::detect::is_candidate;
use rosguard_core::model::{ListAddress, ListEntry, Protocol};
use rosguard_core::observation::{Observation, ObservePlan};
use rosguard_core::outcome::{AddResult, Applied, BackendError, RemoveResult};
use rosguard_core::settings::{Detection, Settings};
use serde::{Deserialize, Serialize};

/// The format name in every header.
pub const FORMAT: &str = "rosguard-recording";
/// The version this build writes and the newest it reads.
pub const VERSION: u32 = 1;

/// What a recording kept of each poll: rows with at most `max_repl_packets` replies (FastTrack
/// included) and more than zero sent, of the listed protocols, to any port; TCP flows the stall
/// rule could watch up to `stall_max_repl_packets` replies; every unanswered TCP attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefilter {
    /// The most replies a kept row has (the asymmetric test's widest `max_repl_packets`).
    pub max_repl_packets: u64,
    /// The most replies a kept TCP flow has for the stall rule.
    pub stall_max_repl_packets: u64,
    /// The protocols kept.
    pub protocols: Vec<Protocol>,
}

impl Prefilter {
    /// The default: 10 replies, 64 for stalls, and the config's protocols (at least TCP, UDP).
    pub fn for_settings(s: &Settings) -> Self {
        let d = &s.detection;
        let mut protocols = vec![Protocol::Tcp, Protocol::Udp];
        for p in &d.protocols {
            if !protocols.contains(p) {
                protocols.push(*p);
            }
        }
        Self {
            max_repl_packets: d.max_repl_packets.max(10),
            stall_max_repl_packets: d.stall.max_repl_packets.max(64),
            protocols,
        }
    }

    /// The settings the recorder reads with: every rule at its loosest within this filter.
    pub fn reading_settings(&self, s: &Settings) -> Settings {
        let mut s = s.clone();
        let d = &mut s.detection;
        d.enabled = true;
        d.monitored_ports.clear();
        d.protocols = self.protocols.clone();
        d.min_orig_packets = 0;
        d.max_repl_packets = self.max_repl_packets;
        d.scan.enabled = true;
        d.stall.enabled = true;
        d.stall.max_repl_packets = self.stall_max_repl_packets;
        s
    }

    /// What `d` could flag that this filter did not keep, in words (empty: nothing).
    pub fn blind_spots(&self, d: &Detection) -> Vec<String> {
        let mut out = Vec::new();
        if d.max_repl_packets > self.max_repl_packets {
            out.push(format!(
                "detection.max_repl_packets = {} is looser than the recording's pre-filter ({}): rows with more replies were not recorded",
                d.max_repl_packets, self.max_repl_packets
            ));
        }
        if d.stall.enabled && d.stall.max_repl_packets > self.stall_max_repl_packets {
            out.push(format!(
                "detection.stall.max_repl_packets = {} is looser than the recording's pre-filter ({})",
                d.stall.max_repl_packets, self.stall_max_repl_packets
            ));
        }
        for p in d.protocols.iter().filter(|p| !self.protocols.contains(p)) {
            out.push(format!("protocol {p} was not recorded"));
        }
        out
    }
}

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The router's name in the config.
    pub router: String,
    /// The rosguard version that recorded it.
    pub rosguard: String,
    /// What each poll kept.
    pub prefilter: Prefilter,
    /// When recording started, seconds since the UNIX epoch.
    pub started: f64,
}

/// One recorded poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poll {
    /// When it was read, seconds since the UNIX epoch.
    pub t: f64,
    /// What it saw, after the pre-filter.
    pub observation: Observation,
}

impl Poll {
    /// The poll's time.
    pub fn time(&self) -> Duration {
        Duration::try_from_secs_f64(self.t).unwrap_or_default()
    }
}

/// Writes a recording, one gzip member per line.
pub struct Writer<W: Write> {
    out: W,
    /// Bytes written so far.
    pub bytes: u64,
    /// Polls written so far.
    pub polls: u64,
    /// Rows written so far.
    pub rows: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a recording with its header.
    pub fn new(out: W, header: &Header) -> Result<Self> {
        let mut w = Self {
            out,
            bytes: 0,
            polls: 0,
            rows: 0,
        };
        w.line(&serde_json::to_vec(header)?)?;
        Ok(w)
    }

    /// Appends one poll, whole.
    pub fn poll(&mut self, poll: &Poll) -> Result<()> {
        self.line(&serde_json::to_vec(poll)?)?;
        self.polls += 1;
        self.rows += poll.observation.candidates.len() as u64;
        Ok(())
    }

    fn line(&mut self, json: &[u8]) -> Result<()> {
        let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
        gz.write_all(json)?;
        gz.write_all(b"\n")?;
        let member = gz.finish()?;
        self.out.write_all(&member)?;
        self.out.flush()?;
        self.bytes += member.len() as u64;
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A recording read back.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Its header.
    pub header: Header,
    /// Its complete polls, in order.
    pub polls: Vec<Poll>,
    /// Why reading stopped before the end of the file (a recorder killed mid-write), if it did.
    pub cut: Option<String>,
}

impl Recording {
    /// Reads a recording file.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Self::read(f).with_context(|| format!("{} is not a readable recording", path.display()))
    }

    /// Reads a recording; polls after a damaged or cut-off point are dropped and said so.
    pub fn read(r: impl Read) -> Result<Self> {
        Self::read_with_limit(r, MAX_LINE_BYTES)
    }

    /// [`Recording::read`] with lines of at most `max` bytes.
    fn read_with_limit(r: impl Read, max: u64) -> Result<Self> {
        let mut reader = BufReader::new(MultiGzDecoder::new(r));
        let mut lines = std::iter::from_fn(move || next_line(&mut reader, max));
        let first = match lines.next() {
            Some(Ok(l)) => l,
            Some(Err(e)) => bail!("no header: {e}"),
            None => bail!("the file is empty"),
        };
        let header: Header = serde_json::from_slice(&first)
            .context("the first line is not a rosguard recording header")?;
        if header.format != FORMAT {
            bail!("format {:?} is not {FORMAT:?}", header.format);
        }
        if header.version > VERSION {
            bail!(
                "format version {} is newer than this rosguard reads ({VERSION}); use a newer rosguard",
                header.version
            );
        }
        let mut polls = Vec::new();
        let mut cut = None;
        for (i, line) in lines.enumerate() {
            let parsed = line
                .map_err(|e| e.to_string())
                .and_then(|l| serde_json::from_slice::<Poll>(&l).map_err(|e| e.to_string()));
            match parsed {
                Ok(p) => polls.push(p),
                Err(e) => {
                    cut = Some(format!(
                        "poll {} is incomplete or damaged ({e}); read the {} before it",
                        i + 1,
                        polls.len()
                    ));
                    break;
                }
            }
        }
        Ok(Self { header, polls, cut })
    }
}

/// The most bytes one line (a header or a poll) may hold once decompressed: far above a poll
/// of `max_candidates` rows, far below what a crafted file could unpack to.
pub const MAX_LINE_BYTES: u64 = 256 << 20;

/// The next line, without its newline; `None` at the end. A line over `max` bytes is an
/// error, not an allocation without end.
fn next_line(r: &mut impl BufRead, max: u64) -> Option<std::io::Result<Vec<u8>>> {
    let mut line = Vec::new();
    match r.take(max + 1).read_until(b'\n', &mut line) {
        Ok(0) => None,
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            Some(Ok(line))
        }
        Ok(n) if n as u64 > max => Some(Err(std::io::Error::other(format!(
            "a line longer than {max} bytes"
        )))),
        // The last line, cut off before its newline.
        Ok(_) => Some(Ok(line)),
        Err(e) => Some(Err(e)),
    }
}

/// Plays a recording's polls as a router: each `observe` is the next poll, cut down by the
/// replayed settings' own candidate test; the block list is the recording's at the start plus
/// what the replay added (expiring on the recording's clock), not what the live daemon did.
pub struct RecordingBackend {
    polls: std::vec::IntoIter<Poll>,
    now: Duration,
    list: Vec<(ListEntry, Option<Duration>)>,
    next_id: u64,
    started: bool,
}

impl RecordingBackend {
    /// A backend over `recording`'s polls.
    pub fn new(recording: Recording) -> Self {
        Self {
            polls: recording.polls.into_iter(),
            now: Duration::ZERO,
            list: Vec::new(),
            next_id: 1,
            started: false,
        }
    }

    /// The time of the poll `observe` will return next, if any is left.
    pub fn peek_time(&self) -> Option<Duration> {
        self.polls.as_slice().first().map(Poll::time)
    }
}

fn exhausted() -> BackendError {
    BackendError {
        kind: rosguard_core::FailureKind::ConnectionLost,
        label: "recording".into(),
        message: "the recording has no more polls".into(),
    }
}

impl Backend for RecordingBackend {
    async fn connect(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn observe(
        &mut self,
        _plan: &ObservePlan,
        settings: &Settings,
    ) -> Result<Observation, BackendError> {
        let poll = self.polls.next().ok_or_else(exhausted)?;
        self.now = poll.time();
        let mut obs = poll.observation;
        if !self.started {
            // The list as it was when recording started; from here on, the replay's own.
            self.started = true;
            self.list = obs
                .block_list
                .iter()
                .map(|e| (e.clone(), e.timeout.map(|t| self.now + t)))
                .collect();
        }
        let now = self.now;
        self.list.retain(|(_, end)| end.is_none_or(|end| end > now));
        obs.block_list = self
            .list
            .iter()
            .map(|(e, end)| ListEntry {
                timeout: end.map(|end| end.saturating_sub(now)),
                ..e.clone()
            })
            .collect();
        let d = &settings.detection;
        obs.candidates.retain(|c| is_candidate(c, d));
        Ok(obs)
    }

    async fn apply(&mut self, decision: &Decision, _settings: &Settings) -> Applied {
        let mut adds = Vec::with_capacity(decision.adds.len());
        for a in &decision.adds {
            if decision.dry_run {
                adds.push(AddResult::WouldAdd);
                continue;
            }
            let present = self
                .list
                .iter()
                .any(|(e, _)| e.address == ListAddress::Net(IpNet::from(a.address)));
            if present {
                adds.push(AddResult::AlreadyPresent);
                continue;
            }
            self.list.push((
                ListEntry {
                    id: format!("*R{}", self.next_id),
                    list: String::new(),
                    address: ListAddress::Net(IpNet::from(a.address)),
                    timeout: Some(a.timeout),
                    dynamic: true,
                    disabled: false,
                    comment: Some(a.comment.clone()),
                },
                Some(self.now + a.timeout),
            ));
            self.next_id += 1;
            adds.push(AddResult::Added);
        }
        let removals = decision
            .removals
            .iter()
            .map(|_| {
                if decision.dry_run {
                    RemoveResult::WouldRemove
                } else {
                    RemoveResult::Removed
                }
            })
            .collect();
        for l in &decision.lifts {
            self.list
                .retain(|(e, _)| e.address != ListAddress::Net(IpNet::from(l.address)));
        }
        Applied {
            adds,
            removals,
            lost: None,
        }
    }

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            router: "core".into(),
            rosguard: "test".into(),
            prefilter: Prefilter::for_settings(&Settings::default()),
            started: 1.0e9,
        }
    }

    #[test]
    fn a_recording_reads_back_and_a_cut_one_up_to_its_last_poll() {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let mut two = 0;
        for i in 0..3 {
            if i == 2 {
                two = w.bytes as usize;
            }
            let o = Observation {
                rows_read: i,
                ..Observation::default()
            };
            w.poll(&Poll {
                t: 1.0e9 + i as f64,
                observation: o,
            })
            .unwrap();
        }
        let bytes = w.into_inner();
        let r = Recording::read(&bytes[..]).unwrap();
        assert_eq!(r.header, header());
        assert_eq!(r.polls.len(), 3);
        assert_eq!(r.polls[2].observation.rows_read, 2);
        assert!(r.cut.is_none());
        // Killed in the middle of the last poll.
        let r = Recording::read(&bytes[..two + (bytes.len() - two) / 2]).unwrap();
        assert_eq!(r.polls.len(), 2);
        assert!(r.cut.as_deref().unwrap().contains("poll 3"), "{:?}", r.cut);
    }

    #[test]
    fn a_poll_over_the_line_limit_is_refused_not_read_without_end() {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let big = Observation {
            candidates: Vec::new(),
            own: vec!["192.0.2.1".parse().unwrap(); 500],
            ..Observation::default()
        };
        w.poll(&Poll {
            t: 1.0e9,
            observation: Observation::default(),
        })
        .unwrap();
        w.poll(&Poll {
            t: 1.0e9 + 1.0,
            observation: big,
        })
        .unwrap();
        let bytes = w.into_inner();
        let r = Recording::read_with_limit(&bytes[..], 2000).unwrap();
        assert_eq!(r.polls.len(), 1);
        assert!(
            r.cut.as_deref().unwrap().contains("longer than 2000"),
            "{:?}",
            r.cut
        );
        assert_eq!(Recording::read(&bytes[..]).unwrap().polls.len(), 2);
    }

    #[test]
    fn other_files_and_newer_versions_are_refused() {
        assert!(Recording::read(&b""[..]).is_err());
        assert!(Recording::read(&b"not gzip"[..]).is_err());
        let mut h = header();
        h.version = VERSION + 1;
        let bytes = Writer::new(Vec::new(), &h).unwrap().into_inner();
        let e = format!("{:#}", Recording::read(&bytes[..]).unwrap_err());
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn settings_looser_than_the_prefilter_are_named() {
        let p = Prefilter::for_settings(&Settings::default());
        assert!(p.blind_spots(&Detection::default()).is_empty());
        let mut d = Detection {
            max_repl_packets: 20,
            ..Detection::default()
        };
        d.protocols.push(Protocol::Gre);
        let b = p.blind_spots(&d);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].contains("max_repl_packets = 20"));
    }
}
