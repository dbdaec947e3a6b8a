//! The connection table: generated rows, scenario flow instances and hand-added connections,
//! merged in `.id` order and evaluated at a given sim time.
//!
//! Rows are computed when read, never stored: the table holds the sources (a generator spec,
//! the flows and their instance start times, the hand-added connections) plus what clients
//! changed (removed ids, counter overrides). Iteration is chunked with a cursor so that a
//! print holds the router lock only for a few hundred rows at a time. An external source can
//! own a family's table (`sync`): its rows replace the hand-added ones, keeping ids by 5-tuple,
//! and the family's generated and scenario rows are gone. It deliberately does not encode or
//! filter rows: that is the print's job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::connection::{ConnRow, ConnTuple, RowStrings, SimConnection};
use crate::firewall::FlowPacket;
use crate::generate::GenerateSpec;
use crate::kinds::Family;
use crate::scenario::Flow;

#[derive(Debug)]
struct Generated {
    spec: GenerateSpec,
    base_id: u64,
    /// One bit per generated row, allocated on the first removal.
    removed: Vec<u64>,
}

impl Generated {
    fn is_removed(&self, idx: u64) -> bool {
        self.removed
            .get((idx / 64) as usize)
            .is_some_and(|w| w & (1 << (idx % 64)) != 0)
    }

    fn remove(&mut self, idx: u64) {
        if self.removed.is_empty() {
            self.removed = vec![0; self.spec.connections.div_ceil(64)];
        }
        if let Some(w) = self.removed.get_mut((idx / 64) as usize) {
            *w |= 1 << (idx % 64);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Instance {
    id: u64,
    flow: u32,
    idx: u32,
    start: Duration,
}

#[derive(Debug)]
struct Manual {
    conn: SimConnection,
    strings: RowStrings,
    counters_at: Duration,
}

/// Where a row comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Generated(u64),
    Instance(usize),
    Manual,
}

#[derive(Debug)]
pub(crate) struct ConnTable {
    generated: Option<Generated>,
    flows: Vec<Flow>,
    instances: Vec<Instance>,
    removed_instances: HashSet<u64>,
    manual: BTreeMap<u64, Manual>,
    overrides: HashMap<u64, (u64, u64)>,
    flushed_before: Option<Duration>,
    next_id: u64,
    boot_at: Duration,
    wan: Option<IpAddr>,
    /// Per family (IPv4, IPv6): an external source owns the table (`sync`), so generated and
    /// scenario rows of that family are gone.
    external: [bool; 2],
}

fn slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl ConnTable {
    pub(crate) fn new(
        flows: Vec<Flow>,
        generate: Option<GenerateSpec>,
        wan: Option<IpAddr>,
    ) -> Self {
        let mut next_id = 1u64;
        let generated = generate.map(|spec| {
            let g = Generated {
                spec,
                base_id: next_id,
                removed: Vec::new(),
            };
            next_id += spec.connections as u64;
            g
        });
        let mut starts: Vec<(Duration, u32, u32)> = Vec::new();
        for (fi, f) in flows.iter().enumerate() {
            for i in 0..f.count {
                starts.push((f.start_of(i), fi as u32, i));
            }
        }
        starts.sort_unstable();
        let instances = starts
            .into_iter()
            .map(|(start, flow, idx)| {
                let id = next_id;
                next_id += 1;
                Instance {
                    id,
                    flow,
                    idx,
                    start,
                }
            })
            .collect();
        Self {
            generated,
            flows,
            instances,
            removed_instances: HashSet::new(),
            manual: BTreeMap::new(),
            overrides: HashMap::new(),
            flushed_before: None,
            next_id,
            boot_at: Duration::ZERO,
            wan,
            external: [false; 2],
        }
    }

    /// Sim time of the last boot.
    pub(crate) fn boot_at(&self) -> Duration {
        self.boot_at
    }

    fn source_of(&self, id: u64) -> Option<Source> {
        if let Some(g) = &self.generated {
            if id >= g.base_id && id < g.base_id + g.spec.connections as u64 {
                return Some(Source::Generated(id - g.base_id));
            }
        }
        if let Ok(pos) = self.instances.binary_search_by_key(&id, |i| i.id) {
            return Some(Source::Instance(pos));
        }
        self.manual.contains_key(&id).then_some(Source::Manual)
    }

    fn family_of(&self, id: u64, src: Source) -> Option<Family> {
        Some(match src {
            Source::Generated(idx) => self.generated.as_ref()?.spec.family_of(idx),
            Source::Instance(pos) => {
                let inst = self.instances.get(pos)?;
                Family::of(self.flows.get(inst.flow as usize)?.src)
            }
            Source::Manual => self.manual.get(&id)?.conn.family(),
        })
    }

    fn row_of(&self, id: u64, src: Source, now: Duration) -> Option<ConnRow> {
        let mut row = match src {
            Source::Generated(idx) => {
                let g = self.generated.as_ref()?;
                if g.is_removed(idx) {
                    return None;
                }
                g.spec
                    .row(idx, id, now.saturating_sub(self.boot_at), self.wan)
            }
            Source::Instance(pos) => {
                let inst = self.instances.get(pos)?;
                let flow = self.flows.get(inst.flow as usize)?;
                if self.removed_instances.contains(&id)
                    || self.flushed_before.is_some_and(|f| inst.start < f)
                    || self.external[slot(Family::of(flow.src))]
                {
                    return None;
                }
                flow.row_at(inst.idx, id, now, self.wan)?
            }
            Source::Manual => {
                let m = self.manual.get(&id)?;
                let elapsed = now.saturating_sub(m.counters_at);
                let active = m.conn.is_active();
                let remaining = if active {
                    m.conn.timeout
                } else {
                    m.conn
                        .timeout
                        .checked_sub(elapsed)
                        .filter(|d| !d.is_zero())?
                };
                m.conn.row_at(id, elapsed, remaining, &m.strings)
            }
        };
        if let Some(&(orig, repl)) = self.overrides.get(&id) {
            row.orig_packets = orig;
            row.repl_packets = repl;
        }
        Some(row)
    }

    /// Appends to `out` up to `max_rows` rows of `family` with an id above `after` for which
    /// `keep` says yes, looking at no more than `max_scan` ids. Returns the cursor to continue
    /// from, or `None` when the table has no ids above the last one examined. Rows `keep`
    /// turns down are never copied out (a filtered print of a million rows keeps few).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn collect(
        &self,
        after: u64,
        family: Family,
        now: Duration,
        out: &mut Vec<ConnRow>,
        max_rows: usize,
        max_scan: usize,
        keep: &mut dyn FnMut(&ConnRow) -> bool,
    ) -> Option<u64> {
        let mut cursor = after;
        let mut scanned = 0;
        while out.len() < max_rows && scanned < max_scan {
            let next_gen = self.generated.as_ref().and_then(|g| {
                let end = g.base_id + g.spec.connections as u64;
                let id = (cursor + 1).max(g.base_id);
                (id < end).then_some(id)
            });
            let pos = self.instances.partition_point(|i| i.id <= cursor);
            let next_inst = self.instances.get(pos).map(|i| i.id);
            let next_manual = self.manual.range(cursor + 1..).next().map(|(&id, _)| id);
            let id = [next_gen, next_inst, next_manual]
                .into_iter()
                .flatten()
                .min()?;
            cursor = id;
            scanned += 1;
            let src = if next_gen == Some(id) {
                Source::Generated(id - self.generated.as_ref().map_or(0, |g| g.base_id))
            } else if next_inst == Some(id) {
                Source::Instance(pos)
            } else {
                Source::Manual
            };
            if self.family_of(id, src) != Some(family) {
                continue;
            }
            if let Some(row) = self.row_of(id, src, now) {
                if keep(&row) {
                    out.push(row);
                }
            }
        }
        Some(cursor)
    }

    /// The row with this id in `family`, if it exists now: a direct lookup, the way a router
    /// answers `get` or a `print` by `.id` without walking its table.
    pub(crate) fn get(&self, id: u64, family: Family, now: Duration) -> Option<ConnRow> {
        let src = self.source_of(id)?;
        if self.family_of(id, src) != Some(family) {
            return None;
        }
        self.row_of(id, src, now)
    }

    /// How many rows exist now, both families together (one conntrack table, as the
    /// router's `total-entries` counts it), without making any row of the generated table.
    pub(crate) fn live_count(&self, now: Duration) -> u64 {
        let generated = self.generated.as_ref().map_or(0, |g| {
            let removed: u64 = g.removed.iter().map(|w| u64::from(w.count_ones())).sum();
            g.spec.connections as u64 - removed
        });
        let instances = self
            .instances
            .iter()
            .enumerate()
            .filter(|&(pos, i)| self.row_of(i.id, Source::Instance(pos), now).is_some())
            .count() as u64;
        let manual = self
            .manual
            .keys()
            .filter(|&&id| self.row_of(id, Source::Manual, now).is_some())
            .count() as u64;
        generated + instances + manual
    }

    /// Whether a row with this id exists now (in either family).
    pub(crate) fn exists(&self, id: u64, now: Duration) -> bool {
        self.source_of(id)
            .and_then(|s| self.row_of(id, s, now))
            .is_some()
    }

    /// Whether a row with this id exists now in `family`.
    pub(crate) fn exists_in(&self, id: u64, family: Family, now: Duration) -> bool {
        self.source_of(id)
            .filter(|&s| self.family_of(id, s) == Some(family))
            .and_then(|s| self.row_of(id, s, now))
            .is_some()
    }

    /// Removes a row; `false` when it does not exist now.
    pub(crate) fn remove(&mut self, id: u64, now: Duration) -> bool {
        let Some(src) = self.source_of(id) else {
            return false;
        };
        if self.row_of(id, src, now).is_none() {
            return false;
        }
        match src {
            Source::Generated(idx) => {
                if let Some(g) = self.generated.as_mut() {
                    g.remove(idx);
                }
            }
            Source::Instance(_) => {
                self.removed_instances.insert(id);
            }
            Source::Manual => {
                self.manual.remove(&id);
            }
        }
        self.overrides.remove(&id);
        true
    }

    /// Adds a hand-made connection; returns its id.
    pub(crate) fn add(&mut self, conn: SimConnection, now: Duration) -> u64 {
        // Drop hand-made rows that have timed out, so the map does not grow without bound.
        let expired: Vec<u64> = self
            .manual
            .iter()
            .filter(|(&id, _)| self.row_of(id, Source::Manual, now).is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.manual.remove(&id);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.manual.insert(
            id,
            Manual {
                strings: RowStrings::of(&conn),
                conn,
                counters_at: now,
            },
        );
        id
    }

    /// Sets a row's packet counters; `false` when it does not exist now.
    pub(crate) fn set_counters(&mut self, id: u64, orig: u64, repl: u64, now: Duration) -> bool {
        if !self.exists(id, now) {
            return false;
        }
        if let Some(m) = self.manual.get_mut(&id) {
            let per = |bytes: u64, packets: u64, default: u64| {
                bytes.checked_div(packets).unwrap_or(default)
            };
            let osz = per(m.conn.orig_bytes, m.conn.orig_packets, 100);
            let rsz = per(m.conn.repl_bytes, m.conn.repl_packets, 1000);
            m.conn.orig_bytes = orig.saturating_mul(osz);
            m.conn.repl_bytes = repl.saturating_mul(rsz);
            m.conn.orig_packets = orig;
            m.conn.repl_packets = repl;
            m.counters_at = now;
        } else {
            self.overrides.insert(id, (orig, repl));
        }
        true
    }

    /// Makes the table of `family` exactly `conns` (all of that family) from now on: a row
    /// whose 5-tuple is in the table now keeps its id, others get fresh ids; every other row
    /// of the family goes, and generated and scenario rows of it stay gone (an external source
    /// owns the table). Returns the ids in the order of `conns`.
    pub(crate) fn sync(
        &mut self,
        family: Family,
        conns: Vec<SimConnection>,
        now: Duration,
    ) -> Vec<u64> {
        if !self.external[slot(family)] {
            self.external[slot(family)] = true;
            self.clear_generated(family);
        }
        let mut known: HashMap<ConnTuple, u64> = HashMap::new();
        for (&id, m) in &self.manual {
            if m.conn.family() == family && self.row_of(id, Source::Manual, now).is_some() {
                known.entry(m.conn.tuple()).or_insert(id);
            }
        }
        self.manual.retain(|_, m| m.conn.family() != family);
        let mut ids = Vec::with_capacity(conns.len());
        for conn in conns {
            let id = known.remove(&conn.tuple()).unwrap_or_else(|| {
                let id = self.next_id;
                self.next_id += 1;
                id
            });
            self.overrides.remove(&id);
            self.manual.insert(
                id,
                Manual {
                    strings: RowStrings::of(&conn),
                    conn,
                    counters_at: now,
                },
            );
            ids.push(id);
        }
        for id in known.into_values() {
            self.overrides.remove(&id);
        }
        ids
    }

    /// Appends to `out` the first packets of the scenario connections that started after
    /// instance `*cursor` and no later than `now` (at most `max`), in start order, and moves the
    /// cursor past them. Families an external source owns have no scenario traffic.
    pub(crate) fn first_packets(
        &self,
        cursor: &mut usize,
        now: Duration,
        max: usize,
        out: &mut Vec<FlowPacket>,
    ) {
        while *cursor < self.instances.len() && out.len() < max {
            let inst = self.instances[*cursor];
            if inst.start > now {
                break;
            }
            *cursor += 1;
            let Some(flow) = self.flows.get(inst.flow as usize) else {
                continue;
            };
            if self.external[slot(Family::of(flow.src))] {
                continue;
            }
            let (src, src_port, dst, dst_port) = flow.tuple_of(inst.idx);
            out.push(FlowPacket {
                at: inst.start,
                protocol: flow.protocol,
                src,
                src_port,
                dst,
                dst_port,
            });
        }
    }

    /// Moves the cursor of `first_packets` past every connection started by `now`, without
    /// looking at them.
    pub(crate) fn skip_packets(&self, cursor: &mut usize, now: Duration) {
        let end = self.instances.partition_point(|i| i.start <= now);
        *cursor = (*cursor).max(end);
    }

    /// Marks every generated row of `family` removed (one pass over the generated table).
    fn clear_generated(&mut self, family: Family) {
        if let Some(g) = self.generated.as_mut() {
            for idx in 0..g.spec.connections as u64 {
                if g.spec.family_of(idx) == family {
                    g.remove(idx);
                }
            }
        }
    }

    /// A router reboot: every connection that exists now is gone; generated traffic comes back
    /// with new ids and fresh counters; scenario flows that have not started yet still will.
    pub(crate) fn reboot(&mut self, now: Duration) {
        self.manual.clear();
        self.overrides.clear();
        self.flushed_before = Some(now);
        self.boot_at = now;
        if let Some(g) = self.generated.as_mut() {
            g.base_id = self.next_id;
            self.next_id += g.spec.connections as u64;
            g.removed = Vec::new();
        }
        for family in [Family::V4, Family::V6] {
            if self.external[slot(family)] {
                self.clear_generated(family);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(t: &ConnTable, family: Family, now: Duration) -> Vec<ConnRow> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let mut chunk = Vec::new();
            match t.collect(cursor, family, now, &mut chunk, 7, 11, &mut |_| true) {
                Some(c) => {
                    out.extend(chunk);
                    cursor = c;
                }
                None => {
                    out.extend(chunk);
                    return out;
                }
            }
        }
    }

    #[test]
    fn merges_sources_in_id_order_and_removes() {
        let spec = GenerateSpec {
            connections: 50,
            ipv6_share: 0.2,
            ..GenerateSpec::default()
        };
        let mut t = ConnTable::new(Vec::new(), Some(spec), None);
        let now = Duration::from_secs(1);
        let id = t.add(
            SimConnection::tcp("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()),
            now,
        );
        assert_eq!(id, 51);
        let v4 = all(&t, Family::V4, now);
        let v6 = all(&t, Family::V6, now);
        assert_eq!(v4.len() + v6.len(), 51);
        assert!(v4.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(v4.last().map(|r| r.id), Some(51));
        assert!(t.remove(3, now));
        assert!(!t.remove(3, now));
        assert!(!t.exists(3, now));
        assert!(t.get(3, Family::V4, now).is_none() && t.get(3, Family::V6, now).is_none());
        assert_eq!(t.get(51, Family::V4, now).map(|r| r.id), Some(51));
        assert!(t.get(51, Family::V6, now).is_none());
        assert_eq!(
            all(&t, Family::V4, now).len() + all(&t, Family::V6, now).len(),
            50
        );
        t.reboot(now);
        assert!(!t.exists(51, now));
        assert!(!t.exists(1, now));
        assert!(t.exists(52, now), "generated rows come back with new ids");
    }
}
