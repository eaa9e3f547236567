//! Pure helpers a mirroring planner needs on top of parsed RECENT files.

use std::collections::HashMap;

use super::epoch::Epoch;
use super::file::{EventType, RecentEvent, RecentFile};
use super::interval::Interval;
use super::names::rfilename;

/// The interval chain, shortest first: the principal's own interval, then
/// `meta.aggregator` sorted by length, de-duplicated, keeping only intervals
/// longer than the principal's (the reference's `aggregate` filters the
/// same way; its client builds the chain from the principal's aggregator).
pub fn interval_chain(principal: &RecentFile) -> Vec<Interval> {
    let own = principal.interval;
    let mut rest: Vec<Interval> = principal
        .meta
        .aggregator
        .iter()
        .copied()
        .filter(|i| i.secs() > own.secs())
        .collect();
    rest.sort_by_key(|i| i.secs());
    rest.dedup_by_key(|i| i.secs());
    let mut out = Vec::with_capacity(rest.len() + 1);
    out.push(own);
    out.extend(rest);
    out
}

/// File names of the chain, e.g. `RECENT-1h.json, RECENT-6h.json, ...`.
pub fn chain_file_names(principal: &RecentFile) -> Vec<String> {
    interval_chain(principal)
        .iter()
        .map(|i| rfilename(principal.filenameroot(), i, principal.serializer_suffix()))
        .collect()
}

/// The reference client's refresh rule (`_rmirror_cleanup`): our copy of
/// `next` is stale – "the interval covered by a recentfile (minmax) and the
/// interval covered by the next higher recentfile (merged/epoch) do not
/// overlap anymore" – when `this.merged.epoch` is missing or
/// `next.minmax.max < this.merged.epoch`.  (`next`'s max is taken from its
/// events, falling back to `meta.minmax.max`, as the reference reader does.)
pub fn needs_refresh(this: &RecentFile, next: &RecentFile) -> bool {
    match (this.merged_epoch(), next.max_epoch()) {
        (None, _) => true,
        (Some(_), None) => true,
        (Some(merged), Some(next_max)) => next_max < merged,
    }
}

/// The oldest epoch from which `file` is known to hold every event (newest
/// per path): its oldest event, or — if earlier — its newest event minus its
/// interval (the file's "contract" period).  The oldest event alone is not
/// enough: when a path is updated, its older entries are removed from every
/// file (newest event per path), so a file's oldest event can be much newer
/// than the start of the period it covers even though nothing is missing.
pub fn coverage_start(file: &RecentFile) -> Option<Epoch> {
    let min = file.min_epoch()?;
    let by_interval = file.max_epoch().and_then(|m| m.checked_sub_secs(file.interval.secs())).unwrap_or_else(|| Epoch::from_secs(0));
    Some(if &by_interval < min { by_interval } else { min.clone() })
}

/// Why a file of the chain must be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadReason {
    /// Index 0: always polled.
    Principal,
    /// Events between the epoch already applied and the shorter file's
    /// oldest event can only be found here (or on a fresh start, where the
    /// walk runs down to `Z`).
    Coverage,
    /// Not needed to catch up, but the local copy no longer overlaps the
    /// shorter file's `merged.epoch` ([`needs_refresh`]); refetch it so the
    /// published local RECENT set stays coherent.
    Stale,
}

/// Result of [`plan_reads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// One entry per chain element; `None` = no need to read.
    pub reasons: Vec<Option<ReadReason>>,
    /// Set when a file that is needed is not available (`files[i]` is
    /// `None`): fetch it, then call [`plan_reads`] again; entries after it
    /// are undecided (`None`).
    pub missing: Option<usize>,
}

/// Which files of the chain must be read, given local copies (`files`,
/// aligned with `chain`, `None` = not available locally) and the newest
/// epoch up to which every event has already been applied (`None` = fresh
/// start / after a dirtymark change).
///
/// Rule: file `i+1` is needed for coverage when file `i` is needed and
/// `applied < coverage_start(file i)` (or file `i` is empty, or `applied`
/// is `None`); a file whose coverage starts `<= applied` covers the gap, so
/// the walk stops there.  Independently, [`needs_refresh`] marks `Stale`.
pub fn plan_reads(
    chain: &[Interval],
    files: &[Option<&RecentFile>],
    applied: Option<&Epoch>,
) -> ReadPlan {
    let n = chain.len();
    let mut reasons: Vec<Option<ReadReason>> = vec![None; n];
    if n == 0 {
        return ReadPlan {
            reasons,
            missing: None,
        };
    }
    reasons[0] = Some(ReadReason::Principal);
    let mut needed = true; // is file i needed for coverage?
    for i in 0..n {
        let cur = files.get(i).copied().flatten();
        let cur = match cur {
            Some(c) => c,
            None if needed => {
                return ReadPlan {
                    reasons,
                    missing: Some(i),
                }
            }
            None => {
                needed = false;
                continue;
            }
        };
        if i + 1 >= n {
            break;
        }
        let next = files.get(i + 1).copied().flatten();
        let cover_next = needed
            && match (applied, coverage_start(cur)) {
                (None, _) => true,
                (Some(_), None) => true,
                (Some(a), Some(start)) => a < &start,
            };
        let stale = next.is_some_and(|nx| needs_refresh(cur, nx));
        reasons[i + 1] = if cover_next {
            Some(ReadReason::Coverage)
        } else if stale {
            Some(ReadReason::Stale)
        } else {
            None
        };
        needed = cover_next;
    }
    ReadPlan {
        reasons,
        missing: None,
    }
}

/// Outcome of comparing dirtymarks (principal file only, as the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtymarkCheck {
    /// Nothing recorded yet.
    FirstSeen,
    Unchanged,
    /// Different in either direction: discard the applied state and
    /// re-mirror everything the index lists (full index-driven resync).
    Changed,
}

pub fn check_dirtymark(recorded: Option<&Epoch>, current: Option<&Epoch>) -> DirtymarkCheck {
    match recorded {
        None => DirtymarkCheck::FirstSeen,
        Some(r) if Some(r) == current => DirtymarkCheck::Unchanged,
        Some(_) => DirtymarkCheck::Changed,
    }
}

/// A path with the epoch of the event that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEvent {
    pub path: String,
    pub epoch: Epoch,
}

/// Result of [`collapse_events`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collapsed {
    /// Paths to fetch, newest first.
    pub fetch: Vec<PathEvent>,
    /// Paths to delete, deepest first (more components first, then longer
    /// paths), so children go before their directories.
    pub delete: Vec<PathEvent>,
}

/// "Newest event per path wins" over events from any number of files, in
/// any order.  On an exact epoch tie between `new` and `delete` for the same
/// path, `new` wins (a spurious fetch of a vanished file is harmless, a
/// spurious delete is not).  Additionally:
/// * a fetch is dropped when an ancestor directory has a *newer* delete
///   (the whole subtree was removed after that event);
/// * a delete is dropped when a descendant has a *newer* `new` (the path
///   exists again as a directory).
pub fn collapse_events<'a, I>(events: I) -> Collapsed
where
    I: IntoIterator<Item = &'a RecentEvent>,
{
    let mut newest: HashMap<&'a str, (&'a Epoch, EventType)> = HashMap::new();
    for ev in events {
        match newest.get_mut(ev.path.as_str()) {
            None => {
                newest.insert(ev.path.as_str(), (&ev.epoch, ev.kind));
            }
            Some(slot) => {
                let replace =
                    ev.epoch > *slot.0 || (ev.epoch == *slot.0 && ev.kind == EventType::New);
                if replace {
                    *slot = (&ev.epoch, ev.kind);
                }
            }
        }
    }
    let mut deletes: HashMap<&str, &Epoch> = HashMap::new();
    let mut fetches: Vec<(&str, &Epoch)> = Vec::new();
    for (p, (e, k)) in &newest {
        match k {
            EventType::Delete => {
                deletes.insert(p, e);
            }
            EventType::New => fetches.push((p, e)),
        }
    }
    let mut kept_fetch = Vec::with_capacity(fetches.len());
    let mut revived: Vec<&str> = Vec::new();
    for (p, e) in fetches {
        let mut dropped = false;
        for (idx, _) in p.match_indices('/') {
            let anc = &p[..idx];
            if let Some(de) = deletes.get(anc) {
                if *de > e {
                    dropped = true;
                } else {
                    revived.push(anc);
                }
            }
        }
        if !dropped {
            kept_fetch.push(PathEvent {
                path: p.to_string(),
                epoch: e.clone(),
            });
        }
    }
    for r in revived {
        deletes.remove(r);
    }
    kept_fetch.sort_by(|a, b| b.epoch.cmp(&a.epoch).then_with(|| a.path.cmp(&b.path)));
    let mut del: Vec<PathEvent> = deletes
        .into_iter()
        .map(|(p, e)| PathEvent {
            path: p.to_string(),
            epoch: e.clone(),
        })
        .collect();
    del.sort_by(|a, b| depth_first(&a.path, &b.path));
    Collapsed {
        fetch: kept_fetch,
        delete: del,
    }
}

fn depth_first(a: &str, b: &str) -> std::cmp::Ordering {
    let ca = a.matches('/').count();
    let cb = b.matches('/').count();
    cb.cmp(&ca)
        .then_with(|| b.len().cmp(&a.len()))
        .then_with(|| a.cmp(b))
}

/// What the local tree has at a path about to be deleted (the planner
/// `lstat`s it; a RECENT event does not say whether it was a directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    Missing,
    /// Regular file, symlink or anything that is not a directory.
    NotDir,
    Dir,
}

/// One delete operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOp {
    Unlink(String),
    Rmdir(String),
    /// Nothing there; still counts as done (as in the reference client).
    NotFound(String),
}

/// Order deletes like the reference client's delayed operations: all
/// unlinks first, then `rmdir`s longest path first (a failing `rmdir`
/// of a non-empty directory is only a warning there), then the
/// not-found ones.  `kind` is asked once per path.
pub fn order_deletes<F>(deletes: &[PathEvent], mut kind: F) -> Vec<DeleteOp>
where
    F: FnMut(&str) -> LocalKind,
{
    let mut unlinks = Vec::new();
    let mut rmdirs: Vec<&str> = Vec::new();
    let mut missing = Vec::new();
    for d in deletes {
        match kind(&d.path) {
            LocalKind::Missing => missing.push(DeleteOp::NotFound(d.path.clone())),
            LocalKind::NotDir => unlinks.push(DeleteOp::Unlink(d.path.clone())),
            LocalKind::Dir => rmdirs.push(&d.path),
        }
    }
    rmdirs.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    unlinks.extend(rmdirs.into_iter().map(|p| DeleteOp::Rmdir(p.to_string())));
    unlinks.extend(missing);
    unlinks
}
