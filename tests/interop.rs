//! Interop tests: the rmirror binary (`CARGO_BIN_EXE_rmirror`) against the
//! real rsync daemon (3.5.0) from `tests/support`, checked by the real rsync
//! client as oracle (`rsync -anic --delete -H --modify-window=-1`).
//!
//! * `matrix`  – protocols 27..=32 × {plain, -z}, every `--checksum-choice`
//!   and `--compress-choice`, and `-c`: first sync of the nasty tree + a
//!   3 MiB file, then an update with deletions / additions / type changes /
//!   mode changes / in-place edits synced with `--delete`; oracle clean after
//!   each, delta really used, a third run is a no-op.
//! * `auth`    – RSYNC_PASSWORD / --password-file, wrong password (exit 5,
//!   DEST untouched, no password in any output), missing password, a
//!   world-readable password file.
//! * `wire`    – 24 MiB file changed in 12 places: daemon "sent N bytes" for
//!   rmirror within 10 % of the real rsync's (plain and -z).
//! * `delete`  – server I/O error skips --delete (exit 23), --max-delete
//!   (exit 25), -n -i, compare / compare --json.
//! * `ls`, `safety`, `errors`, `filters` – listings, symlinks planted in
//!   DEST, stale temp files, escaped MOTD/names, exit codes 5/10/30/35,
//!   -c, exclude vs delete, `host::module` URLs.
//!
//! Every rmirror run is killed after 60 s (a hang fails the test). Tests
//! marked `#[ignore = "BUG: ..."]` document known rmirror bugs.

mod support;

#[path = "interop/common.rs"]
mod common;

#[path = "interop/auth.rs"]
mod auth;
#[path = "interop/delete.rs"]
mod delete;
#[path = "interop/errors.rs"]
mod errors;
#[path = "interop/filters.rs"]
mod filters;
#[path = "interop/ls.rs"]
mod ls;
#[path = "interop/matrix.rs"]
mod matrix;
#[path = "interop/safety.rs"]
mod safety;
#[path = "interop/wire.rs"]
mod wire;
