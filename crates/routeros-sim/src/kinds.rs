//! The small value types every part of the simulator shares: the address family of a table,
//! and the switches between RouterOS variants that behave differently on the wire (address
//! format, query comparison, FastTrack counters) or in time (the clock).
//!
//! This is the crate's leaf module: it imports nothing of the crate, so any module may use it
//! without creating an import cycle. It deliberately holds no behaviour beyond naming values.

/// How connection rows show ports; both occur in the field (`routeros-api.md` section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFormat {
    /// Older routers: `src-address=192.168.2.248:32815` (no port for icmp); IPv6 as `[addr]:port`.
    Combined,
    /// Newer routers: `src-address=172.31.255.29 src-port=56454`, plus `reply-src-port` etc.
    #[default]
    Separate,
}

/// How `?<name=x` / `?>name=x` compare values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryCompare {
    /// Numbers compare as numbers (`10 > 3`), durations as durations, addresses as addresses.
    #[default]
    Numeric,
    /// Every value compares as a byte string (`"10" < "3"`): emulates a router whose query
    /// engine does not type the connection counters (unconfirmed on real hardware).
    String,
}

/// The address family of a table or list: the one type every layer of rosguard shares.
pub use routeros_proto::Family;

/// The simulator's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimClock {
    /// Time runs with the machine's monotonic clock (plus whatever `advance` added).
    #[default]
    Real,
    /// Time stands still and only moves by `SimHandle::advance`: deterministic tests.
    /// Wall-clock stamps (`creation-time`) start at 2025-01-01 00:00:00.
    Manual,
}

/// Whether rows that are not FastTracked show the four `*-fasttrack-*` counters. Real routers
/// list the properties (documented names), but whether a row without FastTrack prints them as
/// `0` or leaves them out is not confirmed: the simulator can emulate both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FastTrackCounters {
    /// Every row carries `orig-fasttrack-packets`, `orig-fasttrack-bytes`,
    /// `repl-fasttrack-packets` and `repl-fasttrack-bytes`; `0` when it is not FastTracked
    /// (a FastTrack-capable router, the default).
    #[default]
    Always,
    /// Only rows with `fasttrack=true` carry them; other rows lack the properties.
    OnlyFastTracked,
}
