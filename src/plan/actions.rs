//! The pure decisions of a pass: when to fall back to a full sync, which
//! RECENT files to (re)fetch, and which paths to fetch or delete, newest first,
//! in chunks.  No I/O here; `recent.rs` does the work.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use crate::recent::plan::{collapse_events, coverage_start, needs_refresh, plan_reads, PathEvent, ReadReason};
use crate::recent::{check_dirtymark, DirtymarkCheck, Epoch, EventType, Interval, RecentEvent, RecentFile};

use super::state::{EpochRanges, PendingDelete, TreeState};

/// Why a pass does a full sync (`pull` with `--delete`) instead of following the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FullReason {
    /// No state: nothing is known about the local tree.
    NoState,
    /// The principal file's dirtymark differs from the one we applied under.
    Dirtymark,
    /// The RECENT files do not reach back to what we applied (or only the
    /// `Z` file does, which drops deletes).
    Gap(String),
    /// The published local RECENT files are missing.
    LocalRecentMissing,
    /// The last caught-up pass is older than allowed.
    TooOld,
    /// `--full-every` elapsed.
    FullEvery,
    /// Asked for (iim `-f`).
    Forced,
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::NoState => f.write_str("no state yet"),
            FullReason::Dirtymark => f.write_str("dirtymark changed"),
            FullReason::Gap(s) => write!(f, "gap in the RECENT files: {s}"),
            FullReason::LocalRecentMissing => f.write_str("local RECENT files missing"),
            FullReason::TooOld => f.write_str("local mirror older than allowed"),
            FullReason::FullEvery => f.write_str("--full-every elapsed"),
            FullReason::Forced => f.write_str("forced"),
        }
    }
}

/// Inputs to [`full_sync_reason`] besides the state.
#[derive(Debug, Clone, Default)]
pub struct FullSyncPolicy {
    pub now_secs: u64,
    pub full_every: Option<Duration>,
    pub max_age: Option<Duration>,
    pub local_recent_present: bool,
    pub forced: bool,
    /// A dirtymark change is rate-limited (the last full sync it caused was
    /// too recent): not a reason now; the other reasons still apply.
    pub dirtymark_held: bool,
}

/// Decide whether the state (already adjusted for `--since`) and the fresh
/// principal file demand a full sync before any index-driven work.
pub fn full_sync_reason(st: &TreeState, principal: &RecentFile, p: &FullSyncPolicy) -> Option<FullReason> {
    if p.forced {
        return Some(FullReason::Forced);
    }
    if st.applied.is_none() {
        return Some(FullReason::NoState);
    }
    if !p.dirtymark_held && check_dirtymark(st.dirtymark.as_ref(), principal.meta.dirtymark.as_ref()) == DirtymarkCheck::Changed {
        return Some(FullReason::Dirtymark);
    }
    if !p.local_recent_present {
        return Some(FullReason::LocalRecentMissing);
    }
    if let (Some(max), Some(last)) = (p.max_age, st.last_caught_up) {
        if p.now_secs.saturating_sub(last) > max.as_secs() {
            return Some(FullReason::TooOld);
        }
    }
    if let Some(every) = p.full_every {
        match st.last_full_sync {
            Some(t) if p.now_secs.saturating_sub(t) < every.as_secs() => {}
            _ => return Some(FullReason::FullEvery),
        }
    }
    None
}

/// The next step of the walk over the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkStep {
    /// Fetch these chain indices (never 0: the principal is fetched first),
    /// then call [`walk_step`] again.
    Fetch(Vec<usize>),
    /// Everything needed is loaded.
    Done,
    /// The logs cannot tell us what changed: full sync.
    Gap(String),
}

/// Which chain files must be (re)fetched, given what is loaded (`files[0]`
/// is the freshly fetched principal) and the high-water mark.  A file needed
/// for coverage is refetched when it is missing or its copy no longer
/// overlaps the shorter file's `merged.epoch` (the reference's
/// `_rmirror_cleanup` rule); one that is only stale is refetched too, so the
/// published local set stays coherent.  `fetched` lists indices already
/// fetched in this pass (never asked for twice).
pub fn walk_step(chain: &[Interval], files: &[Option<&RecentFile>], applied: &Epoch, fetched: &[usize]) -> WalkStep {
    let plan = plan_reads(chain, files, Some(applied));
    let mut want = Vec::new();
    if let Some(i) = plan.missing {
        if fetched.contains(&i) {
            return WalkStep::Gap(format!("{} is needed but missing upstream", chain[i]));
        }
        want.push(i);
    }
    for (i, r) in plan.reasons.iter().enumerate().skip(1) {
        let Some(r) = r else { continue };
        if fetched.contains(&i) || want.contains(&i) {
            continue;
        }
        let (Some(prev), cur) = (files[i - 1], files[i]) else { continue };
        let stale = match cur {
            None => true,
            Some(c) => needs_refresh(prev, c),
        };
        match r {
            ReadReason::Coverage | ReadReason::Stale if stale => want.push(i),
            _ => {}
        }
    }
    if !want.is_empty() {
        want.sort_unstable();
        return WalkStep::Fetch(want);
    }
    // All loaded: does the deepest needed file reach back to `applied`?
    let deepest = plan
        .reasons
        .iter()
        .enumerate()
        .filter(|(i, r)| *i == 0 || matches!(r, Some(ReadReason::Coverage)))
        .map(|(i, _)| i)
        .max()
        .unwrap_or(0);
    let Some(f) = files.get(deepest).copied().flatten() else {
        return WalkStep::Gap(format!("{} could not be read", chain[deepest]));
    };
    if f.interval.is_z() && deepest > 0 {
        return WalkStep::Gap(format!(
            "catching up from {applied} needs the Z file, which does not keep deletes"
        ));
    }
    match coverage_start(f) {
        Some(min) if &min > applied && deepest + 1 >= chain.len() => WalkStep::Gap(format!(
            "the longest file {} reaches back to {min}, not to {applied}",
            chain[deepest]
        )),
        _ => WalkStep::Done,
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub path: String,
    pub epoch: Epoch,
    pub kind: EventType,
}

/// All work still to do: the newest event per path (across every loaded
/// file, plus the pending deletes) that is above the high-water mark and not
/// in a done range — and every surviving pending delete.  Newest first.
pub fn pending_actions<'a, I>(
    events: I,
    applied: &Epoch,
    done: &EpochRanges,
    pending: &[PendingDelete],
) -> Vec<Action>
where
    I: IntoIterator<Item = &'a RecentEvent>,
{
    let extra: Vec<RecentEvent> = pending
        .iter()
        .map(|p| RecentEvent { epoch: p.epoch.clone(), path: p.path.clone(), kind: EventType::Delete })
        .collect();
    let pend: HashSet<(&str, &Epoch)> = pending.iter().map(|p| (p.path.as_str(), &p.epoch)).collect();
    let mut refs: Vec<&RecentEvent> = Vec::new();
    for e in events {
        refs.push(e);
    }
    refs.extend(extra.iter());
    let c = collapse_events(refs);
    let todo = |p: &PathEvent| &p.epoch > applied && !done.contains(&p.epoch);
    let mut out: Vec<Action> = Vec::with_capacity(c.fetch.len() + c.delete.len());
    for f in c.fetch.iter().filter(|p| todo(p)) {
        out.push(Action { path: f.path.clone(), epoch: f.epoch.clone(), kind: EventType::New });
    }
    for d in c.delete.iter().filter(|p| todo(p) || pend.contains(&(p.path.as_str(), &p.epoch))) {
        out.push(Action { path: d.path.clone(), epoch: d.epoch.clone(), kind: EventType::Delete });
    }
    out.sort_by(|a, b| b.epoch.cmp(&a.epoch).then_with(|| a.path.cmp(&b.path)));
    out
}

/// Length of the next chunk of `actions` (newest first): at most
/// `max_fetch` fetches, never splitting equal epochs, deletes riding along.
pub fn chunk_len(actions: &[Action], max_fetch: usize) -> usize {
    let max_fetch = max_fetch.max(1);
    let mut fetches = 0usize;
    let mut n = 0usize;
    while n < actions.len() {
        if actions[n].kind == EventType::New {
            if fetches >= max_fetch && actions[n].epoch != actions[n - 1].epoch {
                break;
            }
            fetches += 1;
        }
        n += 1;
    }
    n
}

/// Parent directories of `paths` that are not themselves being deleted (their
/// mtimes change when a child is removed; the content pull lists them so
/// their upstream times can be restored afterwards).  Excludes the root.
pub fn parents_to_refresh<'a>(deletes: impl IntoIterator<Item = &'a str>, deleted: &HashSet<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for p in deletes {
        let Some((parent, _)) = p.rsplit_once('/') else { continue };
        // skip parents that vanish too (and anything below a vanishing dir)
        let mut gone = false;
        let mut cur = parent;
        loop {
            if deleted.contains(cur) {
                gone = true;
                break;
            }
            match cur.rsplit_once('/') {
                Some((up, _)) => cur = up,
                None => break,
            }
        }
        if !gone && seen.insert(parent.to_string()) {
            out.push(parent.to_string());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recent::{parse_recent_with, ParseOptions};

    fn e(s: &str) -> Epoch {
        Epoch::parse(s).unwrap()
    }

    fn ev(epoch: &str, path: &str, new: bool) -> RecentEvent {
        RecentEvent { epoch: e(epoch), path: path.into(), kind: if new { EventType::New } else { EventType::Delete } }
    }

    /// A RECENT file as JSON text.
    fn rf(interval: &str, aggregator: &[&str], merged: Option<&str>, dirty: &str, events: &[(&str, &str, &str)]) -> RecentFile {
        let recent: Vec<String> = events
            .iter()
            .map(|(ep, p, t)| format!(r#"{{"epoch":"{ep}","path":"{p}","type":"{t}"}}"#))
            .collect();
        let agg: Vec<String> = aggregator.iter().map(|a| format!("\"{a}\"")).collect();
        let merged = merged.map(|m| format!(r#","merged":{{"epoch":"{m}","into_interval":"x","time":"{m}"}}"#)).unwrap_or_default();
        let txt = format!(
            r#"{{"meta":{{"aggregator":[{}],"dirtymark":"{dirty}","interval":"{interval}","protocol":1{merged}}},"recent":[{}]}}"#,
            agg.join(","),
            recent.join(",")
        );
        let opts = ParseOptions { max_span_factor: None, ..Default::default() };
        parse_recent_with(txt.as_bytes(), &format!("RECENT-{interval}.json"), opts).unwrap()
    }

    #[test]
    fn full_sync_reasons() {
        let p = rf("1h", &["6h"], None, "100", &[("5000", "a", "new")]);
        let mut st = TreeState::fresh("x");
        let pol = FullSyncPolicy { now_secs: 10_000, local_recent_present: true, ..Default::default() };
        assert_eq!(full_sync_reason(&st, &p, &pol), Some(FullReason::NoState));
        st.applied = Some(e("4000"));
        st.dirtymark = Some(e("100"));
        assert_eq!(full_sync_reason(&st, &p, &pol), None);
        st.dirtymark = Some(e("99"));
        assert_eq!(full_sync_reason(&st, &p, &pol), Some(FullReason::Dirtymark));
        st.dirtymark = Some(e("100.0"));
        assert_eq!(full_sync_reason(&st, &p, &pol), None, "numeric equality");
        let missing = FullSyncPolicy { local_recent_present: false, ..pol.clone() };
        assert_eq!(full_sync_reason(&st, &p, &missing), Some(FullReason::LocalRecentMissing));
        let every = FullSyncPolicy { full_every: Some(Duration::from_secs(600)), ..pol.clone() };
        assert_eq!(full_sync_reason(&st, &p, &every), Some(FullReason::FullEvery));
        st.last_full_sync = Some(9_500);
        assert_eq!(full_sync_reason(&st, &p, &every), None);
        st.last_full_sync = Some(9_400);
        assert_eq!(full_sync_reason(&st, &p, &every), Some(FullReason::FullEvery));
        let old = FullSyncPolicy { max_age: Some(Duration::from_secs(86_400)), ..pol.clone() };
        st.last_caught_up = Some(9_000);
        assert_eq!(full_sync_reason(&st, &p, &old), None);
        st.last_caught_up = Some(1);
        assert_eq!(full_sync_reason(&st, &p, &FullSyncPolicy { now_secs: 100_000, ..old }), Some(FullReason::TooOld));
        assert_eq!(full_sync_reason(&st, &p, &FullSyncPolicy { forced: true, ..pol }), Some(FullReason::Forced));
    }

    #[test]
    fn walk_stops_when_covered() {
        let chain: Vec<Interval> = ["1h", "6h", "1d", "Z"].iter().map(|s| Interval::parse(s).unwrap()).collect();
        let p = rf("1h", &["6h", "1d", "Z"], Some("9000000000"), "1", &[("10000000", "a", "new"), ("9500000", "b", "new")]);
        // applied inside the principal: nothing else needed
        let files = [Some(&p), None, None, None];
        assert_eq!(walk_step(&chain, &files, &e("9600000"), &[]), WalkStep::Done);
        // applied older than the principal's oldest: need 6h
        assert_eq!(walk_step(&chain, &files, &e("8000000"), &[]), WalkStep::Fetch(vec![1]));
        let six = rf("6h", &["1d", "Z"], Some("7000000000"), "1", &[("9000000", "c", "new"), ("7500000", "d", "delete")]);
        let files = [Some(&p), Some(&six), None, None];
        assert_eq!(walk_step(&chain, &files, &e("8000000"), &[1]), WalkStep::Done);
        // older still: 1d, and it was asked for but missing upstream → gap
        assert_eq!(walk_step(&chain, &files, &e("7000000"), &[1]), WalkStep::Fetch(vec![2]));
        assert!(matches!(walk_step(&chain, &files, &e("7000000"), &[1, 2]), WalkStep::Gap(_)));
        // stale 6h copy (older than the principal's merged.epoch) is refetched
        let old_six = rf("6h", &["1d", "Z"], None, "1", &[("8500000", "c", "new"), ("7500000", "d", "delete")]);
        let files = [Some(&p), Some(&old_six), None, None];
        assert_eq!(walk_step(&chain, &files, &e("8000000"), &[]), WalkStep::Fetch(vec![1]));
        // only Z would reach back: gap (Z drops deletes)
        let day = rf("1d", &["Z"], Some("5000000000"), "1", &[("8000000", "e", "new"), ("6000000", "f", "new")]);
        let z = rf("Z", &[], None, "1", &[("5000000", "g", "new"), ("10000", "h", "new")]);
        let files = [Some(&p), Some(&six), Some(&day), Some(&z)];
        assert!(matches!(walk_step(&chain, &files, &e("100000"), &[1, 2, 3]), WalkStep::Gap(_)));
        assert_eq!(walk_step(&chain, &files, &e("6500000"), &[1, 2, 3]), WalkStep::Done);
        // a two-file chain whose last finite file does not reach back
        let chain2: Vec<Interval> = ["1h", "6h"].iter().map(|s| Interval::parse(s).unwrap()).collect();
        let files = [Some(&p), Some(&six)];
        assert!(matches!(walk_step(&chain2, &files, &e("10000"), &[1]), WalkStep::Gap(_)));
        // a path updated again loses its older entries everywhere: the oldest
        // event is then recent, but the file still covers its whole interval
        let p1 = rf("1h", &["6h", "Z"], Some("5000000"), "1", &[("5000000", "same", "new")]);
        let chain3: Vec<Interval> = ["1h", "6h", "Z"].iter().map(|s| Interval::parse(s).unwrap()).collect();
        assert_eq!(walk_step(&chain3, &[Some(&p1), None, None], &e("4999000"), &[]), WalkStep::Done);
        assert_eq!(walk_step(&chain3, &[Some(&p1), None, None], &e("4990000"), &[]), WalkStep::Fetch(vec![1]));
    }

    #[test]
    fn actions_newest_first_and_filtered() {
        let evs = vec![
            ev("100", "a", true),
            ev("90", "b", false),
            ev("80", "a", true),
            ev("70", "d/x", true),
            ev("60", "d", false),
            ev("50", "old", true),
        ];
        let acts = pending_actions(&evs, &e("55"), &EpochRanges::new(), &[]);
        let got: Vec<(&str, &str)> = acts.iter().map(|a| (a.path.as_str(), a.kind.as_str())).collect();
        // d/x is newer than the delete of d: d stays (revived), d/x fetched; "old" <= applied
        assert_eq!(got, vec![("a", "new"), ("b", "delete"), ("d/x", "new")]);
        // done ranges skip what a newest-first chunk already applied
        let mut done = EpochRanges::new();
        done.insert(e("90"), e("100"));
        let acts = pending_actions(&evs, &e("55"), &done, &[]);
        assert_eq!(acts.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(), vec!["d/x"]);
        // ... but a pending delete inside a done range survives until published
        let pend = vec![PendingDelete { path: "b".into(), epoch: e("90") }];
        let acts = pending_actions(&evs, &e("55"), &done, &pend);
        assert_eq!(acts.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(), vec!["b", "d/x"]);
        // a newer `new` of the same path cancels the pending delete
        let evs2 = [ev("120", "b", true)];
        let acts = pending_actions(evs2.iter().chain(&evs), &e("55"), &done, &pend);
        let got: Vec<(&str, &str)> = acts.iter().map(|a| (a.path.as_str(), a.kind.as_str())).collect();
        assert_eq!(got, vec![("b", "new"), ("d/x", "new")]);
        // a directory delete newer than its files' events drops those fetches
        let evs3 = vec![ev("200", "dir", false), ev("150", "dir/f", true), ev("140", "dir/g", false)];
        let acts = pending_actions(&evs3, &e("1"), &EpochRanges::new(), &[]);
        let got: Vec<(&str, &str)> = acts.iter().map(|a| (a.path.as_str(), a.kind.as_str())).collect();
        assert_eq!(got, vec![("dir", "delete"), ("dir/g", "delete")]);
    }

    #[test]
    fn chunks_respect_limits_and_ties() {
        let mk = |ep: &str, p: &str, new: bool| Action {
            path: p.into(),
            epoch: e(ep),
            kind: if new { EventType::New } else { EventType::Delete },
        };
        let acts = vec![mk("9", "a", true), mk("8", "x", false), mk("7", "b", true), mk("7", "c", true), mk("6", "d", true)];
        assert_eq!(chunk_len(&acts, 1), 2); // a + the delete riding along
        assert_eq!(chunk_len(&acts, 2), 4); // b and c share an epoch
        assert_eq!(chunk_len(&acts, 100), 5);
        assert_eq!(chunk_len(&[], 10), 0);
    }

    #[test]
    fn parents_skip_vanishing_dirs() {
        let dels = ["a/b/c", "a/b/d", "x/y", "x", "top"];
        let set: HashSet<&str> = dels.iter().copied().collect();
        assert_eq!(parents_to_refresh(dels, &set), vec!["a/b".to_string()]);
    }
}
