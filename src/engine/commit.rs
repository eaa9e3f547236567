//! Publishing a finished run: staged files and symlinks are renamed into place
//! together at the end (rsync's `--delay-updates`), hard links are made, then
//! deletions run (rsync's `--delete-after`, skipped when the server reported an
//! I/O error, bounded by `--max-delete`), then directory times and permissions
//! are set deepest first. Leftover temp files from killed runs are removed.

use std::collections::{HashMap, HashSet};

use crate::engine::dest::{self, DirCache, Kind};
use crate::engine::generator::{is_dir, Ctx, Staged};
use crate::engine::monitor::Item;
use crate::filter::FilterList;

/// What to do about extraneous files.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub delete: bool,
    pub max_delete: Option<u64>,
    /// Deletions are unsafe (the server reported an I/O error).
    pub io_error: bool,
    /// Local files that could not be written in this run; deletions are skipped.
    pub local_failures: u64,
    pub dry_run: bool,
}

#[derive(Debug, Default)]
pub struct CommitReport {
    pub published: u64,
    pub deleted: u64,
    /// Deletions skipped because of --max-delete.
    pub delete_limited: bool,
    pub errors: u64,
    /// Deletions were skipped because of a server I/O error.
    pub delete_skipped_io: bool,
}

fn err(ctx: &Ctx, name: &[u8], e: impl std::fmt::Display) {
    ctx.monitor.local_error(&format!("{}: {}", crate::text::escape_name(name), e));
}

/// Glob patterns for paths to publish last (`*` and `?` stay inside one
/// component, `**` crosses `/`). A pattern without `/` matches the final
/// component; one ending in `/` matches everything below a directory of that
/// name; any other is matched against the whole path.
#[derive(Debug, Clone, Default)]
pub struct LatePublish {
    patterns: Vec<Vec<u8>>,
}

impl LatePublish {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(pats: I) -> Self {
        LatePublish { patterns: pats.into_iter().map(|p| p.as_ref().as_bytes().to_vec()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn matches(&self, path: &[u8]) -> bool {
        self.patterns.iter().any(|p| late_match(p, path))
    }
}

fn late_match(pat: &[u8], path: &[u8]) -> bool {
    if let Some(dir) = pat.strip_suffix(b"/") {
        // Any ancestor directory named like `dir`.
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        if dir.contains(&b'/') {
            return (1..comps.len()).any(|i| glob(dir, &comps[..i].join(&b'/')));
        }
        return comps.len() > 1 && comps[..comps.len() - 1].iter().any(|c| glob(dir, c));
    }
    if pat.contains(&b'/') {
        glob(pat, path)
    } else {
        glob(pat, path.rsplit(|&b| b == b'/').next().unwrap_or(path))
    }
}

/// Minimal wildcard match: `*` (no `/`), `**` (anything), `?` (one non-`/`).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => (0..=s.len()).any(|i| glob(&p[2..], &s[i..])),
        Some(b'*') => {
            for i in 0..=s.len() {
                if glob(&p[1..], &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && glob(&p[1..], &s[1..]),
        Some(&c) => !s.is_empty() && s[0] == c && glob(&p[1..], &s[1..]),
    }
}

/// Rename staged temps into place, in list order; paths matching `late` go
/// after all others (and after hard links, when the caller orders it so).
pub fn publish(ctx: &Ctx, staged: &mut Vec<Staged>, rep: &mut CommitReport) {
    publish_filtered(ctx, staged, rep, &LatePublish::default(), false);
}

/// Publish either the ordinary staged paths (`late_pass = false`) or only
/// those matching `late` (`late_pass = true`).
pub fn publish_filtered(
    ctx: &Ctx,
    staged: &mut Vec<Staged>,
    rep: &mut CommitReport,
    late: &LatePublish,
    late_pass: bool,
) {
    staged.sort_by_key(|s| s.ndx);
    let mut cache = DirCache::new(ctx.dest.clone());
    for s in staged.iter() {
        if !late.is_empty() {
            let is_late = ctx.entry(s.ndx).map(|e| late.matches(&e.name)).unwrap_or(false);
            if is_late != late_pass {
                continue;
            }
        } else if late_pass {
            continue;
        }
        let Some(e) = ctx.entry(s.ndx) else { continue };
        let r = (|| -> std::io::Result<()> {
            let (dir, base) = cache.parent_of(&e.name)?;
            if let Some(m) = dir.stat(base)? {
                if m.kind == Kind::Dir {
                    dir.remove_all(base)?;
                }
            }
            dir.rename(&s.tmp, &dir, base)
        })();
        match r {
            Ok(()) => rep.published += 1,
            Err(x) => {
                rep.errors += 1;
                err(ctx, &e.name, x);
                if let Ok((d, _)) = cache.parent_of(&e.name) {
                    let _ = d.unlink(&s.tmp);
                }
            }
        }
    }
}

/// Remove staged temps without publishing them (the run was stopped).
pub fn discard(ctx: &Ctx, staged: &[Staged]) {
    let mut cache = DirCache::new(ctx.dest.clone());
    for s in staged {
        let Some(e) = ctx.entry(s.ndx) else { continue };
        if let Ok((dir, _)) = cache.parent_of(&e.name) {
            let _ = dir.unlink(&s.tmp);
        }
    }
}

/// Make hard-link followers point at their leader's published file.
pub fn link_followers(ctx: &Ctx, followers: &[usize], rep: &mut CommitReport) {
    let mut cache = DirCache::new(ctx.dest.clone());
    let mut cache2 = DirCache::new(ctx.dest.clone());
    for &f in followers {
        let (Some(e), Some(&l)) = (ctx.entry(f), ctx.hl_leader.get(&f)) else { continue };
        let Some(le) = ctx.entry(l) else { continue };
        let r = (|| -> std::io::Result<()> {
            let (ldir, lbase) = cache.parent_of(&le.name)?;
            let (fdir, fbase) = cache2.parent_of(&e.name)?;
            match ldir.stat(lbase)? {
                Some(m) if m.kind == Kind::File => {}
                _ => return Err(std::io::Error::other("hard-link leader is missing")),
            }
            let tmp = dest::tmp_name(fbase, ctx.unique());
            ldir.link(lbase, &fdir, &tmp)?;
            if let Some(m) = fdir.stat(fbase)? {
                if m.kind == Kind::Dir {
                    fdir.remove_all(fbase)?;
                }
            }
            fdir.rename(&tmp, &fdir, fbase).inspect_err(|_| {
                let _ = fdir.unlink(&tmp);
            })
        })();
        match r {
            Ok(()) => rep.published += 1,
            Err(x) => {
                rep.errors += 1;
                err(ctx, &e.name, x);
            }
        }
    }
}

/// Directories of the list whose contents the list describes completely:
/// flagged so by the server, and inside what we asked for.
fn content_dirs(ctx: &Ctx, scope: &crate::engine::Scope) -> Vec<usize> {
    ctx.list
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let e = e.as_ref()?;
            (is_dir(e.mode)
                && e.flags & crate::proto::flist::FLAG_CONTENT_DIR != 0
                && scope.allows_content_dir(&e.name))
            .then_some(i)
        })
        .collect()
}

/// Remove temp leftovers and (with --delete) extraneous entries, then set
/// directory attributes deepest first.
pub fn delete_and_finish_dirs(
    ctx: &Ctx,
    filters: &FilterList,
    scope: &crate::engine::Scope,
    d: &DeleteOpts,
    rep: &mut CommitReport,
) {
    let dirs = content_dirs(ctx, scope);
    // Names present in the list, grouped by parent directory.
    let mut children: HashMap<&[u8], HashSet<&[u8]>> = HashMap::new();
    for e in ctx.list.entries.iter().flatten() {
        if e.name == b"." {
            continue;
        }
        let (p, b) = dest::split_parent(&e.name);
        children.entry(p).or_default().insert(b);
    }
    let mut cache = DirCache::new(ctx.dest.clone());
    let mut deleted = 0u64;
    let mut skipped = 0u64;
    let mut skip_deletes = d.io_error;
    if d.delete && d.io_error {
        rep.delete_skipped_io = true;
        ctx.monitor.local_error("IO error encountered -- skipping file deletion");
    } else if d.delete && d.local_failures > 0 {
        skip_deletes = true;
        rep.delete_skipped_io = true;
        ctx.monitor.local_error(&format!(
            "{} file(s) could not be written -- skipping file deletion",
            d.local_failures
        ));
    }
    for &i in &dirs {
        let Some(e) = ctx.entry(i) else { continue };
        let dname: &[u8] = if e.name == b"." { b"" } else { &e.name };
        let dir = match cache.dir(dname) {
            Ok(h) => h,
            Err(_) => continue,
        };
        let Ok(names) = dir.list() else { continue };
        let empty = HashSet::new();
        let keep = children.get(dname).unwrap_or(&empty);
        let mut extraneous: Vec<Vec<u8>> = Vec::new();
        for n in names {
            if keep.contains(n.as_slice()) {
                continue;
            }
            if dest::is_tmp_name(&n) {
                if !d.dry_run {
                    let _ = dir.remove_all(&n);
                }
                continue;
            }
            extraneous.push(n);
        }
        if !d.delete || skip_deletes {
            continue;
        }
        extraneous.sort();
        for n in extraneous {
            let mut full = dname.to_vec();
            if !full.is_empty() {
                full.push(b'/');
            }
            full.extend_from_slice(&n);
            let mut del = Deleter { ctx, filters, d, deleted: &mut deleted, skipped: &mut skipped, rep };
            del.delete(&dir, &n, &full, false);
        }
    }
    rep.deleted = deleted;
    if skipped > 0 {
        rep.delete_limited = true;
        ctx.monitor.local_error(&format!("Deletions stopped due to --max-delete limit ({skipped} skipped)"));
    }
    if d.dry_run {
        return;
    }
    // Directory attributes, deepest first so setting a parent's mtime sticks.
    let mut all_dirs: Vec<usize> = ctx
        .list
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().filter(|e| is_dir(e.mode)).map(|_| i))
        .collect();
    all_dirs.sort_by_key(|&i| std::cmp::Reverse(ctx.entry(i).map(|e| depth(&e.name)).unwrap_or(0)));
    for i in all_dirs {
        let Some(e) = ctx.entry(i) else { continue };
        let r = (|| -> std::io::Result<()> {
            let (dir, base): (dest::DirHandle, &[u8]) =
                if e.name == b"." { (ctx.dest.root().clone(), b".") } else { cache.parent_of(&e.name)? };
            let Some(m) = dir.stat(base)? else { return Ok(()) };
            if m.kind != Kind::Dir {
                return Ok(());
            }
            let want_mode = if ctx.opts.perms { e.mode & 0o7777 } else { m.mode & 0o7777 | 0o700 };
            if (m.mode & 0o7777) != want_mode {
                dir.chmod(base, want_mode)?;
            }
            if ctx.opts.am_root && (ctx.opts.owner || ctx.opts.group) {
                let uid = ctx.owner_of(e);
                let gid = ctx.group_of(e);
                if uid.is_some_and(|u| u != m.uid) || gid.is_some_and(|g| g != m.gid) {
                    dir.chown(base, uid, gid)?;
                }
            }
            // Whole seconds decide for files (rsync's same_time); a directory we touch
            // anyway gets its exact time, sub-second part included (protocol ≥ 31).
            if ctx.opts.times && (m.mtime != e.mtime || (ctx.protocol >= 31 && m.mtime_nsec != e.mtime_nsec)) {
                dir.set_mtime(base, e.mtime, e.mtime_nsec)?;
            }
            Ok(())
        })();
        if let Err(x) = r {
            rep.errors += 1;
            err(ctx, &e.name, x);
        }
    }
}

/// Deletes one extraneous entry the way rsync's `delete_item` does: a
/// directory's contents first (sorted, deepest first), each entry itemized and
/// counted against `--max-delete`, protected entries kept (and so their
/// directory too).
struct Deleter<'a> {
    ctx: &'a Ctx,
    filters: &'a FilterList,
    d: &'a DeleteOpts,
    deleted: &'a mut u64,
    skipped: &'a mut u64,
    rep: &'a mut CommitReport,
}

impl Deleter<'_> {
    /// Returns true when `name` is gone (or would be, in a dry run).
    fn delete(&mut self, dir: &dest::DirHandle, name: &[u8], full: &[u8], inside_deleted: bool) -> bool {
        let Ok(Some(meta)) = dir.stat(name) else { return true };
        let is_d = meta.kind == Kind::Dir;
        let protected = if inside_deleted {
            self.filters.protects_in_deleted_dir(full, is_d)
        } else {
            self.filters.protects(full, is_d)
        };
        if protected {
            return false;
        }
        let mut all_gone = true;
        // A dry run reports a doomed directory once, without descending (as rsync -n does).
        if is_d && !self.d.dry_run {
            match dir.open_dir(name).and_then(|sub| Ok((sub.list()?, sub))) {
                Ok((mut children, sub)) => {
                    children.sort();
                    for c in children {
                        let mut cf = full.to_vec();
                        cf.push(b'/');
                        cf.extend_from_slice(&c);
                        all_gone &= self.delete(&sub, &c, &cf, true);
                    }
                }
                Err(x) => {
                    self.rep.errors += 1;
                    err(self.ctx, full, x);
                    return false;
                }
            }
            if !all_gone {
                return false;
            }
        }
        if let Some(max) = self.d.max_delete {
            if *self.deleted >= max {
                *self.skipped += 1;
                return false;
            }
        }
        self.ctx.monitor.item(&Item {
            code: "*deleting".into(),
            name: full.to_vec(),
            is_dir: is_d,
            link_target: None,
            hardlink_to: None,
        });
        *self.deleted += 1;
        if self.d.dry_run {
            return true;
        }
        let r = if is_d { dir.rmdir(name) } else { dir.unlink(name) };
        match r {
            Ok(()) => true,
            Err(x) => {
                self.rep.errors += 1;
                err(self.ctx, full, x);
                false
            }
        }
    }
}

fn depth(name: &[u8]) -> usize {
    if name == b"." {
        0
    } else {
        name.iter().filter(|&&b| b == b'/').count() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::LatePublish;

    #[test]
    fn late_patterns() {
        let l = LatePublish::new(["RECENT-*", "CURRENT", "Packages*", "repodata/", "dists/**/Release"]);
        assert!(l.matches(b"RECENT-1h.json"));
        assert!(l.matches(b"authors/RECENT-6h.json"));
        assert!(l.matches(b"CURRENT"));
        assert!(!l.matches(b"CURRENT.old"));
        assert!(l.matches(b"main/binary-amd64/Packages.gz"));
        assert!(l.matches(b"x86_64/repodata/repomd.xml"));
        assert!(!l.matches(b"x86_64/repodata"));
        assert!(l.matches(b"dists/stable/main/Release"));
        assert!(!l.matches(b"pool/Release.txt"));
        assert!(!l.matches(b"authors/id/A/AB/Foo.tar.gz"));
    }
}
