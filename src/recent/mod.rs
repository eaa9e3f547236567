//! Pure parsing layer for CPAN-style RECENT files
//! (File::Rsync::Mirror::Recent, "rrr").
//!
//! No I/O: callers hand in bytes and names.  See `/work/shared/recent-format.md`
//! for the format and the reference client's algorithm.
//!
//! * [`Epoch`] – exact decimal timestamps (never compared as floats).
//! * [`Interval`] – `1h 6h 1d 1W 1M 1Q 1Y Z`.
//! * [`parse_recent`] – one RECENT file, JSON or YAML (protocol 0 or 1), validated.
//! * [`names`] – file-name helpers (`RECENT.recent`, `RECENT-1h.json`).
//! * [`plan`] – interval chain, merged/minmax overlap rule, dirtymark check,
//!   newest-event-per-path collapsing and delete ordering.

pub mod epoch;
pub mod file;
pub mod interval;
mod json;
mod yaml;
pub mod names;
pub mod plan;

pub use epoch::{Epoch, EpochError};
pub use file::{
    check_path, parse_recent, parse_recent_with, EventType, Merged, Meta, MinMax, ParseOptions,
    RecentError, RecentEvent, RecentFile, Serializer,
};
pub use interval::{Interval, IntervalError, IntervalUnit};
pub use json::{MAX_JSON_CONTAINER_ITEMS, MAX_JSON_DEPTH, MAX_JSON_STRING_BYTES};
pub use names::{
    check_principal_symlink, principal_name, principal_root, rfilename, split_rfilename, RFileName,
};
pub use plan::{
    chain_file_names, check_dirtymark, collapse_events, coverage_start, interval_chain, needs_refresh,
    order_deletes, plan_reads, Collapsed, DeleteOp, DirtymarkCheck, LocalKind, PathEvent, ReadPlan,
    ReadReason,
};

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
