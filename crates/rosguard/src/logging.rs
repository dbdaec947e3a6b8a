//! Log output: the seed script's human format on stderr, or JSON lines.
//!
//! Human lines read `2026-11-24T16:51:07Z WARN [ConnectionMonitor] core: Detected asymmetric
//! tcp connection: ...`, so log searches written for the RouterOS script keep working; under
//! systemd (`JOURNAL_STREAM` set) the timestamp is left to the journal. JSON lines carry the
//! structured fields (router, src, dst, protocol, orig, repl, address, timeout, ...), and a
//! fatal error is a JSON line too. `RUST_LOG`, when set, overrides the configured level. The
//! level can be changed at run time (SIGHUP reload).
//!
//! This module only formats and filters; what is logged is decided by the callers.

use std::fmt::Write as _;

use anyhow::Result;
use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::LogLevel;

/// The prefix of every human log line, as in the original script.
pub const PREFIX: &str = "[ConnectionMonitor]";

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `LEVEL [ConnectionMonitor] router: message key=value`
    Human,
    /// One JSON object per line.
    Json,
}

/// Changes the active log level after start-up.
#[derive(Clone)]
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    env_override: bool,
}

impl LogHandle {
    /// Applies the configured level, unless `RUST_LOG` rules.
    pub fn set_level(&self, level: LogLevel) {
        if self.env_override {
            return;
        }
        if let Some(h) = &self.handle {
            let _ = h.modify(|f| *f = filter_for(level));
        }
    }
}

fn filter_for(level: LogLevel) -> EnvFilter {
    // Library crates below us stay at warn unless debugging.
    let deps = if level == LogLevel::Debug {
        "info"
    } else {
        "warn"
    };
    EnvFilter::new(format!(
        "{deps},rosguard={l},routeros_client={l},routeros_sim={l},rosguard_core={l},rosguard_routeros={l}",
        l = level.directive()
    ))
}

/// Installs the global subscriber writing to stderr.
pub fn init(level: LogLevel, format: LogFormat) -> Result<LogHandle> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = match &env {
        Some(s) => EnvFilter::try_new(s).unwrap_or_else(|_| filter_for(level)),
        None => filter_for(level),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt_layer = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(HumanFormat {
                timestamps: std::env::var_os("JOURNAL_STREAM").is_none(),
            })
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .try_init()?;
    Ok(LogHandle {
        handle: Some(handle),
        env_override: env.is_some(),
    })
}

/// The human line format.
struct HumanFormat {
    /// Start each line with the time (not under the journal, which stamps lines itself).
    timestamps: bool,
}

/// Writes a fatal error, the last thing a failed command says, in the chosen format.
pub fn fatal(format: LogFormat, text: &str) {
    match format {
        LogFormat::Human => eprintln!("error: {text}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": "ERROR",
                "message": text,
                "target": "rosguard",
            })
        ),
    }
}

/// What a human line shows of an event: the message and the router. The structured fields
/// repeat what the message says; they go to JSON lines only.
#[derive(Default)]
struct Fields {
    message: String,
    router: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "router" => self.router = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "router" => self.router = Some(format!("{value:?}").trim_matches('"').to_owned()),
            _ => {}
        }
    }
}

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        if self.timestamps {
            write!(
                w,
                "{} ",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            )?;
        }
        write!(w, "{} {PREFIX} ", event.metadata().level())?;
        if let Some(r) = &f.router {
            write!(w, "{r}: ")?;
        }
        writeln!(w, "{}", f.message)
    }
}
