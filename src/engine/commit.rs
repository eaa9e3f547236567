//! Publishing a finished run. By default each file is put in place as soon
//! as it is verified ([`place_anon`] or [`publish_one`], called by the
//! receiver and the generator, as rsync does without `--delay-updates`); what is still staged
//! here — everything with `--delay-updates` (and the jobs and RECENT modes,
//! which always delay), and the late-publish paths in any mode (plan rule M4) —
//! is renamed into place together at the end, then hard links are made, then
//! deletions run (rsync's `--delete-after`, skipped when the server reported an
//! I/O error, bounded by `--max-delete`), then directory times and permissions
//! are set deepest first. Leftover temp files from killed runs are removed.



use crate::engine::dest::{self, DirCache, Kind};
use crate::engine::generator::{Ctx, DirAttr, Link, Staged};
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
    /// Late paths held back (the upstream is being updated).
    pub late_held: u64,
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

/// Rename one finished temp `tmp` over `base` in `dir` (where `name` is its
/// full path and `ndx` its list index): the rename is tried first, and only
/// when a directory sits at the final name is that removed and the rename
/// repeated, so the common case costs one `renameat`. With `--partial-dir`
/// the file's partial copy is removed afterwards.
pub fn publish_one(ctx: &Ctx, dir: &dest::DirHandle, base: &[u8], name: &[u8], tmp: &[u8], ndx: i32) -> std::io::Result<()> {
    if let Err(e) = dir.rename(tmp, dir, base) {
        // A file renamed over a directory fails with EISDIR; a symlink or
        // device over an empty or non-empty one with EEXIST/ENOTEMPTY.
        let dir_in_the_way = matches!(e.raw_os_error(), Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST))
            && matches!(dir.stat(base), Ok(Some(m)) if m.kind == Kind::Dir);
        if !dir_in_the_way {
            return Err(e);
        }
        dir.remove_all(base)?;
        dir.rename(tmp, dir, base)?;
    }
    // The partial file served its purpose (--partial-dir).
    if let Some(p) = ctx.partial.as_ref().filter(|_| ctx.partial_seen(ndx)) {
        if let Err(e) = p.remove(dir, base) {
            err(ctx, name, format!("cannot remove the partial file: {e}"));
        }
    }
    Ok(())
}

/// The end of one finished temp `tmp` for the entry `name` (in `dir`, global
/// index `ndx`): renamed into place now (`Ok(None)`, rsync's default), or
/// handed back to be staged for the end of the run (`Ok(Some(_))`:
/// `--delay-updates`, dry runs, late-publish paths). A failed rename removes
/// the temp. Shared by the receiver (regular files) and the generator
/// (symlinks, devices).
pub fn place(ctx: &Ctx, dir: &dest::DirHandle, name: &[u8], tmp: Vec<u8>, ndx: i32) -> std::io::Result<Option<Staged>> {
    if !ctx.publishes_at_once(name) {
        return Ok(Some(Staged { ndx, name: name.to_vec(), tmp }));
    }
    let base = dest::split_parent(name).1;
    publish_one(ctx, dir, base, name, &tmp, ndx).inspect_err(|_| {
        let _ = dir.unlink(&tmp);
    })?;
    Ok(None)
}

/// [`place`] for an unnamed temp (`O_TMPFILE`, only made when the file is
/// published at once and there is no `--partial-dir` to keep it in): linked
/// straight to its name when that is free (a new file: no temp name to
/// create and rename away), else linked under a temp name and renamed over
/// what is there, as a named temp would be.
pub fn place_anon(ctx: &Ctx, dir: &dest::DirHandle, name: &[u8], f: &std::fs::File, ndx: i32) -> std::io::Result<()> {
    let base = dest::split_parent(name).1;
    match dir.link_anon(f, base) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    let (tmp, ()) = dest::under_tmp_name(base, || ctx.unique(), |tmp| dir.link_anon(f, tmp))?;
    publish_one(ctx, dir, base, name, &tmp, ndx).inspect_err(|_| {
        let _ = dir.unlink(&tmp);
    })
}

/// Rename staged temps into place, in list order: either the ordinary staged
/// paths (`late_pass = false`) or only those matching `late` (`late_pass =
/// true`), which the caller publishes after everything else.
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
        let is_late = !late.is_empty() && late.matches(&s.name);
        if is_late != late_pass {
            continue;
        }
        let r = cache.parent_of(&s.name).and_then(|(dir, base)| publish_one(ctx, &dir, base, &s.name, &s.tmp, s.ndx));
        match r {
            Ok(()) => rep.published += 1,
            Err(x) => {
                rep.errors += 1;
                err(ctx, &s.name, x);
                if let Ok((d, _)) = cache.parent_of(&s.name) {
                    let _ = d.unlink(&s.tmp);
                }
            }
        }
    }
}

/// Withdraw staged temps without publishing them (the run was stopped, or
/// their publication is held back). With `--partial-dir` a staged regular
/// file is complete and verified: it is moved to the partial dir, so the
/// next run finds it as the basis and transfers next to nothing for it; never
/// under its final name. Everything else is removed. Returns how many files
/// went to the partial dir.
pub fn discard(ctx: &Ctx, staged: &[Staged]) -> u64 {
    let mut cache = DirCache::new(ctx.dest.clone());
    let mut kept = 0;
    for s in staged {
        let Ok((dir, base)) = cache.parent_of(&s.name) else { continue };
        if let Some(p) = &ctx.partial {
            if matches!(dir.stat(&s.tmp), Ok(Some(m)) if m.kind == Kind::File) {
                match p.keep(&dir, &s.tmp, base) {
                    Ok(()) => {
                        kept += 1;
                        continue;
                    }
                    Err(e) => err(ctx, &s.name, format!("cannot keep the partial file: {e} -- discarded")),
                }
            }
        }
        let _ = dir.unlink(&s.tmp);
    }
    kept
}

/// Make hard-link followers point at their leader's published file.
pub fn link_followers(ctx: &Ctx, links: &[Link], rep: &mut CommitReport) {
    let mut cache = DirCache::new(ctx.dest.clone());
    let mut cache2 = DirCache::new(ctx.dest.clone());
    for l in links {
        let r = (|| -> std::io::Result<()> {
            let (ldir, lbase) = cache.parent_of(&l.leader)?;
            let (fdir, fbase) = cache2.parent_of(&l.follower)?;
            match ldir.stat(lbase)? {
                Some(m) if m.kind == Kind::File => {}
                _ => return Err(std::io::Error::other("hard-link leader is missing")),
            }
            let (tmp, ()) = dest::under_tmp_name(fbase, || ctx.unique(), |t| ldir.link(lbase, &fdir, t))?;
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
                err(ctx, &l.follower, x);
            }
        }
    }
}

/// Apply deletions (with --delete): each extraneous entry the generator found,
/// entry by entry, deepest first; skipped when the server reported an I/O
/// error or this run failed to write some files; bounded by --max-delete.
pub fn delete_extraneous(
    ctx: &Ctx,
    filters: &FilterList,
    extraneous: &mut Vec<Vec<u8>>,
    d: &DeleteOpts,
    rep: &mut CommitReport,
) {
    if !d.delete {
        return;
    }
    if d.io_error {
        rep.delete_skipped_io = true;
        ctx.monitor.local_error("IO error encountered -- skipping file deletion");
        return;
    }
    if d.local_failures > 0 {
        rep.delete_skipped_io = true;
        ctx.monitor.local_error(&format!(
            "{} file(s) could not be written -- skipping file deletion",
            d.local_failures
        ));
        return;
    }
    extraneous.sort();
    extraneous.dedup();
    let mut cache = DirCache::new(ctx.dest.clone());
    let mut deleted = 0u64;
    let mut skipped = 0u64;
    for full in extraneous.iter() {
        let Ok((dir, base)) = cache.parent_of(full) else { continue };
        let mut del = Deleter { ctx, filters, d, deleted: &mut deleted, skipped: &mut skipped, rep };
        del.delete(&dir, base, full, false);
    }
    rep.deleted = deleted;
    if skipped > 0 {
        rep.delete_limited = true;
        ctx.monitor.local_error(&format!("Deletions stopped due to --max-delete limit ({skipped} skipped)"));
    }
}

/// Set directory permissions, owners and times, deepest first so setting a
/// parent's mtime sticks.
pub fn finish_dirs(ctx: &Ctx, dirs: &mut Vec<DirAttr>, rep: &mut CommitReport) {
    dirs.sort_by_key(|a| std::cmp::Reverse(depth(&a.name)));
    let mut cache = DirCache::new(ctx.dest.clone());
    for a in dirs.iter() {
        let r = (|| -> std::io::Result<()> {
            let (dir, base): (dest::DirHandle, &[u8]) =
                if a.name == b"." { (ctx.dest.root().clone(), b".") } else { cache.parent_of(&a.name)? };
            let Some(m) = dir.stat(base)? else { return Ok(()) };
            if m.kind != Kind::Dir {
                return Ok(());
            }
            let want_mode = if ctx.opts.perms { a.mode & 0o7777 } else { m.mode & 0o7777 | 0o700 };
            if (m.mode & 0o7777) != want_mode {
                dir.chmod(base, want_mode)?;
            }
            if a.uid.is_some_and(|u| u != m.uid) || a.gid.is_some_and(|g| g != m.gid) {
                dir.chown(base, a.uid, a.gid)?;
            }
            // Whole seconds decide for files (rsync's same_time); a directory we touch
            // anyway gets its exact time, sub-second part included (protocol ≥ 31).
            if ctx.opts.times && (m.mtime != a.mtime || (ctx.protocol >= 31 && m.mtime_nsec != a.mtime_nsec)) {
                dir.set_mtime(base, a.mtime, a.mtime_nsec)?;
            }
            Ok(())
        })();
        if let Err(x) = r {
            rep.errors += 1;
            err(ctx, &a.name, x);
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
