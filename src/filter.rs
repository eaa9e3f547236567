//! Filter rules (`--exclude`, `--include`, `--filter`, `--exclude-from`,
//! `--include-from`) for the rsync-protocol client.
//!
//! This module is pure: it never touches the filesystem or the network.
//! Merge files (`merge FILE` / `. FILE`) are read through a loader callback
//! supplied by the caller, and `--exclude-from` contents are passed in as
//! bytes.
//!
//! Behaviour follows the rsync man page sections "FILTER RULES" and
//! "PATTERN MATCHING RULES" and the matching/transmission logic of rsync's
//! `exclude.c` and `lib/wildmatch.c` (re-implemented here, not translated):
//!
//! * rules are checked in order and the first one that matches decides;
//! * a pattern with no `/` (ignoring a trailing one) and no `**` is matched
//!   against the last path component only; otherwise against the path from
//!   the transfer root (a leading `/` anchors it to the root, without one the
//!   pattern may match the trailing components / start after any `/`);
//! * `*` never crosses `/`, `**` does, `?` is one non-`/` byte, `[...]` is a
//!   byte class (`[!..]`/`[^..]` negated, ranges, `[:alpha:]`-style POSIX
//!   classes with ASCII semantics), `\` escapes the next byte when the
//!   pattern contains a wildcard;
//! * a trailing `/` restricts the rule to directories, a trailing `/***`
//!   matches the directory itself and everything below it;
//! * the `!` modifier inverts a match.
//!
//! Paths are raw bytes relative to the transfer root, `/`-separated, with no
//! leading `/`; nothing here assumes UTF-8.
//!
//! # Sides
//!
//! A plain include/exclude applies to both the sender (what goes into the
//! file list) and the receiver (what `--delete` must leave alone).  `hide`
//! and `show` (`-s`/`+s`) are sender-only, `protect` and `risk` (`-r`/`+r`)
//! receiver-only.  With `--delete-excluded` (see
//! [`FilterList::set_delete_excluded`]) rules without an explicit side become
//! sender-only, so excluded files are no longer protected from deletion.
//!
//! # Not supported
//!
//! * `dir-merge` / `:` rules (per-directory merge files) and the `C` (CVS)
//!   modifier / `-C` rule: rejected with [`FilterError::Unsupported`].
//! * Rules read from files that are too long (4096 bytes or more for a
//!   pattern, 5120 for a line) are an error here; rsync drops them with a
//!   message instead.

use std::fmt;

/// Longest pattern accepted (rsync's MAXPATHLEN; longer ones are discarded
/// by rsync, and are an error here).
const MAX_PATTERN_LEN: usize = 4096;
/// Longest line accepted from a rule file (rsync's BIGPATHBUFLEN - 1).
const MAX_LINE_LEN: usize = 4096 + 1024 - 1;
/// Merge files may nest at most this deep (rsync's MAX_MERGE_DEPTH).
const MAX_MERGE_DEPTH: usize = 32;

/// What a rule does, derived from its include/exclude nature and its sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `+` / `include`: a show + risk rule (or `+sr`).
    Include,
    /// `-` / `exclude`: a hide + protect rule (or `-sr`).
    Exclude,
    /// `P` / `protect` / `-r`: receiver-only exclude (keeps files from deletion).
    Protect,
    /// `R` / `risk` / `+r`: receiver-only include (cancels protection).
    Risk,
    /// `H` / `hide` / `-s`: sender-only exclude.
    Hide,
    /// `S` / `show` / `+s`: sender-only include.
    Show,
}

/// One parsed include/exclude rule.  Merge rules are expanded and `clear`
/// rules are applied while parsing, so a [`FilterList`] only ever holds
/// these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    include: bool,
    /// Pattern as rsync stores it: leading `/` kept (anchoring), the single
    /// trailing `/` of a directory-only rule removed.
    pattern: Vec<u8>,
    dir_only: bool,
    negate: bool,
    abs_path: bool,
    sender_side: bool,
    receiver_side: bool,
    perishable: bool,
    xattr: bool,
    /// Pattern contains `*`, `?` or `[` (wildcard matching instead of a
    /// literal comparison).
    wild: bool,
    /// Pattern contains `**`.
    wild2: bool,
    /// Pattern starts with `**`.
    wild2_prefix: bool,
    /// Pattern ends with `***`.
    wild3_suffix: bool,
    /// Number of `/` in the stored pattern.
    slash_cnt: usize,
}

impl Rule {
    /// The rule's kind (derived from include/exclude and its sides; a rule
    /// naming both sides, e.g. `-sr`, counts as a plain include/exclude).
    pub fn kind(&self) -> RuleKind {
        match (self.include, self.sender_side, self.receiver_side) {
            (true, true, false) => RuleKind::Show,
            (true, false, true) => RuleKind::Risk,
            (true, _, _) => RuleKind::Include,
            (false, true, false) => RuleKind::Hide,
            (false, false, true) => RuleKind::Protect,
            (false, _, _) => RuleKind::Exclude,
        }
    }
    /// True for include-type rules (`+`, show, risk).
    pub fn is_include(&self) -> bool {
        self.include
    }
    /// The stored pattern: a leading `/` is kept, the trailing `/` of a
    /// directory-only rule is not (see [`Rule::dir_only`]).
    pub fn pattern(&self) -> &[u8] {
        &self.pattern
    }
    /// Pattern starts with `/`: matched from the transfer root only.
    pub fn anchored(&self) -> bool {
        self.pattern.first() == Some(&b'/')
    }
    /// Pattern had a trailing `/`: only matches directories.
    pub fn dir_only(&self) -> bool {
        self.dir_only
    }
    /// `!` modifier: the rule takes effect when the pattern does NOT match.
    pub fn negate(&self) -> bool {
        self.negate
    }
    /// `/` modifier: matched against the absolute path of the item.
    pub fn abs_path(&self) -> bool {
        self.abs_path
    }
    /// Explicitly applies to the sending side (`s` modifier, hide/show).
    pub fn sender_side(&self) -> bool {
        self.sender_side
    }
    /// Explicitly applies to the receiving side (`r` modifier, protect/risk).
    pub fn receiver_side(&self) -> bool {
        self.receiver_side
    }
    /// `p` modifier: ignored inside directories that are being deleted.
    pub fn perishable(&self) -> bool {
        self.perishable
    }
    /// `x` modifier: the rule filters xattr names, never file names.
    pub fn xattr(&self) -> bool {
        self.xattr
    }

    fn applies_to_sender(&self) -> bool {
        self.sender_side || !self.receiver_side
    }
    fn applies_to_receiver(&self, delete_excluded: bool) -> bool {
        if self.receiver_side {
            true
        } else {
            !self.sender_side && !delete_excluded
        }
    }
}

/// Where a rule came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// A command-line argument (`--filter`, `--exclude`, ...).
    Argument,
    /// Line `line` (1-based; 0 for word-split merge files) of the file
    /// `file` (`--exclude-from`, `--include-from`, or a merge file).
    File { file: String, line: usize },
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSource::Argument => f.write_str("argument"),
            RuleSource::File { file, line: 0 } => write!(f, "{file}"),
            RuleSource::File { file, line } => write!(f, "{file}:{line}"),
        }
    }
}

/// Errors from parsing filter rules or encoding them for the wire.  Each
/// variant names the offending rule text (lossily decoded) and where it came
/// from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// The rule does not start with a known rule name or prefix character.
    #[error("unknown filter rule {rule:?} ({source_loc})")]
    UnknownRule {
        rule: String,
        source_loc: RuleSource,
    },
    /// A modifier that is unknown or not allowed for this rule type.
    #[error(
        "invalid modifier '{modifier}' at position {position} in filter rule {rule:?} ({source_loc})"
    )]
    InvalidModifier {
        modifier: char,
        position: usize,
        rule: String,
        source_loc: RuleSource,
    },
    /// A rule that needs a pattern (or file name) has none.
    #[error("unexpected end of filter rule {rule:?} ({source_loc})")]
    MissingPattern {
        rule: String,
        source_loc: RuleSource,
    },
    /// A `clear`/`!` rule followed by other text.
    #[error("'!' rule has trailing characters: {rule:?} ({source_loc})")]
    ClearHasArgument {
        rule: String,
        source_loc: RuleSource,
    },
    /// A rule inside a merge file that names sides while the merge rule
    /// itself already did.
    #[error("specified-side merge file contains specified-side filter {rule:?} ({source_loc})")]
    SideConflict {
        rule: String,
        source_loc: RuleSource,
    },
    /// Pattern or line too long (rsync discards these; we refuse them).
    #[error("over-long filter rule ({len} bytes) {rule:?} ({source_loc})")]
    TooLong {
        len: usize,
        rule: String,
        source_loc: RuleSource,
    },
    /// A feature this client does not implement (dir-merge, CVS rules).
    #[error("unsupported filter rule ({what}): {rule:?} ({source_loc})")]
    Unsupported {
        what: &'static str,
        rule: String,
        source_loc: RuleSource,
    },
    /// The merge-file loader failed (or no loader was given).
    #[error("failed to read merge file {file:?} named by rule {rule:?} ({source_loc}): {reason}")]
    MergeLoad {
        file: String,
        reason: String,
        rule: String,
        source_loc: RuleSource,
    },
    /// Merge files nested more than 32 deep.
    #[error("merge-file depth limit exceeded at {rule:?} ({source_loc})")]
    MergeDepth {
        rule: String,
        source_loc: RuleSource,
    },
    /// The rule cannot be expressed in the peer's protocol version
    /// (rsync: "filter rules are too modern for remote rsync").
    #[error("filter rule {rule:?} is too modern for remote rsync (protocol {protocol})")]
    TooModern { rule: String, protocol: i32 },
}

/// The loader type used for merge files: given the file name from the rule,
/// return its contents or a reason it could not be read.
pub type MergeLoader<'a> = dyn FnMut(&str) -> Result<Vec<u8>, String> + 'a;

/// An ordered list of filter rules (first match wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterList {
    rules: Vec<Rule>,
    delete_excluded: bool,
    sender_root: Vec<u8>,
    receiver_root: Vec<u8>,
}

/// How a rule string is to be parsed (mirrors the flag combinations rsync's
/// option parser and merge-file reader use).
#[derive(Debug, Clone, Copy, Default)]
struct Template {
    /// Inherited: rules default to include.
    include: bool,
    /// Inherited modifiers (from a merge rule).
    abs_path: bool,
    perishable: bool,
    sender_side: bool,
    receiver_side: bool,
    /// No rule prefixes: every token is a pattern (`merge,-` / `merge,+`).
    no_prefixes: bool,
    /// Old `--exclude`/`--include` syntax: only optional `- `/`+ ` and `!`.
    old_prefixes: bool,
    /// Split on whitespace instead of lines (`w` merge modifier).
    word_split: bool,
}

/// Result of one parsed token.
enum Parsed {
    Clear,
    Rule(Rule),
    Merge {
        name: Vec<u8>,
        template: Template,
        exclude_self: bool,
    },
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_space(c: u8) -> bool {
    // C isspace() in the C locale.
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

impl FilterList {
    /// An empty list (everything included, nothing protected).
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the list holds no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in match order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Tell the list that `--delete-excluded` is in effect: rules without an
    /// explicit side become sender-only (they are still sent to the server
    /// but no longer protect anything from deletion locally).  Also implied
    /// by passing `delete_excluded = true` to [`FilterList::wire_rules`].
    pub fn set_delete_excluded(&mut self, on: bool) {
        self.delete_excluded = on;
    }

    /// Path (relative to the server module root, no leading `/`) of the
    /// directory the server sends from; only used by absolute-path (`/`
    /// modifier) rules in [`FilterList::excludes_from_transfer`] and
    /// [`FilterList::rejects_flist_name`].  Empty (the default) means the
    /// module root itself.
    pub fn set_sender_root(&mut self, dir: &[u8]) {
        self.sender_root = trim_slashes(dir).to_vec();
    }

    /// Absolute local path of the destination directory; only used by
    /// absolute-path (`/` modifier) rules in [`FilterList::protects`].
    /// Empty (the default) is treated like `/`.
    pub fn set_receiver_root(&mut self, dir: &[u8]) {
        self.receiver_root = trim_slashes(dir).to_vec();
    }

    /// `--exclude PATTERN`.  Like rsync, the pattern may still start with
    /// `- ` or `+ ` to pick the rule type, and a lone `!` clears the list.
    pub fn add_exclude(&mut self, pat: &str) -> Result<(), FilterError> {
        self.add_exclude_bytes(pat.as_bytes())
    }

    /// [`FilterList::add_exclude`] for a non-UTF-8 pattern.
    pub fn add_exclude_bytes(&mut self, pat: &[u8]) -> Result<(), FilterError> {
        let t = Template {
            old_prefixes: true,
            ..Template::default()
        };
        self.add_str(pat, t, &RuleSource::Argument, None, 0)
    }

    /// `--include PATTERN` (same syntax as [`FilterList::add_exclude`]).
    pub fn add_include(&mut self, pat: &str) -> Result<(), FilterError> {
        self.add_include_bytes(pat.as_bytes())
    }

    /// [`FilterList::add_include`] for a non-UTF-8 pattern.
    pub fn add_include_bytes(&mut self, pat: &[u8]) -> Result<(), FilterError> {
        let t = Template {
            include: true,
            old_prefixes: true,
            ..Template::default()
        };
        self.add_str(pat, t, &RuleSource::Argument, None, 0)
    }

    /// `--filter RULE`: short (`-`, `+`, `P`, `R`, `H`, `S`, `!`, `.`) and
    /// long (`exclude`, `include`, `protect`, `risk`, `hide`, `show`,
    /// `clear`, `merge`) rule names, optional `,`, modifiers (`/ ! s r p x`,
    /// and for merge rules `- + e n w`), then one space or `_` and the
    /// pattern.  A merge rule without a loader fails with
    /// [`FilterError::MergeLoad`]; `dir-merge` fails with
    /// [`FilterError::Unsupported`].
    pub fn add_rule(&mut self, rule: &str) -> Result<(), FilterError> {
        self.add_str(
            rule.as_bytes(),
            Template::default(),
            &RuleSource::Argument,
            None,
            0,
        )
    }

    /// [`FilterList::add_rule`] for non-UTF-8 rule text.
    pub fn add_rule_bytes(&mut self, rule: &[u8]) -> Result<(), FilterError> {
        self.add_str(rule, Template::default(), &RuleSource::Argument, None, 0)
    }

    /// [`FilterList::add_rule`], reading `merge`/`.` files through `loader`
    /// (called with the file name exactly as written in the rule).  Rules in a merge file are parsed
    /// like `--filter` rules, one per line (or per word with `w`), skipping
    /// empty lines and lines starting with `#` or `;`.
    pub fn add_rule_with_loader(
        &mut self,
        rule: &str,
        loader: &mut MergeLoader<'_>,
    ) -> Result<(), FilterError> {
        self.add_str(
            rule.as_bytes(),
            Template::default(),
            &RuleSource::Argument,
            Some(loader),
            0,
        )
    }

    /// `--exclude-from` (`include == false`) / `--include-from`
    /// (`include == true`) file contents.  One pattern per line (LF, CR or
    /// CRLF); blank lines and lines starting with `;` or `#` are ignored; a
    /// line may start with `- ` or `+ ` to choose the type; a line that is
    /// just `!` clears the list.  `origin` names the file in errors.
    pub fn add_from_file(
        &mut self,
        contents: &[u8],
        include: bool,
        origin: &str,
    ) -> Result<(), FilterError> {
        self.add_from_file_inner(contents, include, origin, false)
    }

    /// Like [`FilterList::add_from_file`] but with NUL-terminated entries
    /// (`--from0`).
    pub fn add_from_file0(
        &mut self,
        contents: &[u8],
        include: bool,
        origin: &str,
    ) -> Result<(), FilterError> {
        self.add_from_file_inner(contents, include, origin, true)
    }

    fn add_from_file_inner(
        &mut self,
        contents: &[u8],
        include: bool,
        origin: &str,
        nul: bool,
    ) -> Result<(), FilterError> {
        let t = Template {
            include,
            old_prefixes: true,
            ..Template::default()
        };
        self.parse_file(contents, t, origin, nul, None, 0)
    }

    /// Parse rule-file contents (lines, or words when word-splitting).
    fn parse_file(
        &mut self,
        contents: &[u8],
        t: Template,
        origin: &str,
        nul: bool,
        mut loader: Option<&mut MergeLoader<'_>>,
        depth: usize,
    ) -> Result<(), FilterError> {
        let mut pos = 0;
        let mut line_no = 0;
        while pos < contents.len() {
            line_no += 1;
            let start = pos;
            let mut end = pos;
            // Find the end of this line/word.
            while end < contents.len() {
                let c = contents[end];
                if t.word_split && is_space(c) {
                    break;
                }
                if if nul {
                    c == 0
                } else {
                    c == b'\n' || c == b'\r'
                } {
                    break;
                }
                end += 1;
            }
            pos = end;
            if pos < contents.len() {
                let c = contents[pos];
                pos += 1;
                if !nul && c == b'\r' && contents.get(pos) == Some(&b'\n') {
                    pos += 1;
                }
            }
            let line = &contents[start..end];
            let src = RuleSource::File {
                file: origin.to_string(),
                line: if t.word_split { 0 } else { line_no },
            };
            if line.len() > MAX_LINE_LEN {
                return Err(FilterError::TooLong {
                    len: line.len(),
                    rule: lossy(&line[..64]),
                    source_loc: src,
                });
            }
            if line.is_empty() || (!t.word_split && (line[0] == b';' || line[0] == b'#')) {
                continue;
            }
            let l = loader.as_mut().map(|l| &mut **l as &mut MergeLoader<'_>);
            self.add_str(line, t, &src, l, depth)?;
        }
        Ok(())
    }

    /// Parse every rule in `s` (one, unless word-splitting) and apply it.
    fn add_str(
        &mut self,
        s: &[u8],
        t: Template,
        src: &RuleSource,
        mut loader: Option<&mut MergeLoader<'_>>,
        depth: usize,
    ) -> Result<(), FilterError> {
        let mut rest = s;
        loop {
            let (parsed, next) = match parse_token(rest, t, src)? {
                Some(x) => x,
                None => return Ok(()),
            };
            let rule_text = &rest[..rest.len() - next.len()];
            rest = next;
            match parsed {
                Parsed::Clear => self.rules.clear(),
                Parsed::Rule(r) => self.rules.push(r),
                Parsed::Merge {
                    name,
                    template,
                    exclude_self,
                } => {
                    if exclude_self {
                        let base = match name.iter().rposition(|&c| c == b'/') {
                            Some(i) => &name[i + 1..],
                            None => &name[..],
                        };
                        if !base.is_empty() {
                            self.rules.push(build_rule(base, RuleFlags::default()));
                        }
                    }
                    if depth >= MAX_MERGE_DEPTH {
                        return Err(FilterError::MergeDepth {
                            rule: lossy(rule_text),
                            source_loc: src.clone(),
                        });
                    }
                    let fname = match std::str::from_utf8(&name) {
                        Ok(n) => n.to_string(),
                        Err(_) => {
                            return Err(FilterError::MergeLoad {
                                file: lossy(&name),
                                reason: "merge file name is not valid UTF-8".into(),
                                rule: lossy(rule_text),
                                source_loc: src.clone(),
                            });
                        }
                    };
                    let Some(ld) = loader.as_mut() else {
                        return Err(FilterError::MergeLoad {
                            file: fname,
                            reason: "no merge-file loader available".into(),
                            rule: lossy(rule_text),
                            source_loc: src.clone(),
                        });
                    };
                    let contents = ld(&fname).map_err(|reason| FilterError::MergeLoad {
                        file: fname.clone(),
                        reason,
                        rule: lossy(rule_text),
                        source_loc: src.clone(),
                    })?;
                    let l = loader.as_mut().map(|l| &mut **l as &mut MergeLoader<'_>);
                    self.parse_file(&contents, template, &fname, false, l, depth + 1)?;
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Rules as this client (the receiver on a pull) sends them to the
    /// server, each without its length prefix (the caller writes
    /// `int len, bytes` for each and a final `int 0`).
    ///
    /// * receiver-only rules (protect/risk, `-r`/`+r`) stay local;
    ///   sender-side (hide/show) and two-sided rules are sent;
    /// * with `delete_excluded` (or [`FilterList::set_delete_excluded`])
    ///   rules without a side are sent as sender-side (`-s pat`; the `s` is
    ///   only written for protocol >= 29);
    /// * protocol >= 29: `<+|-><modifiers> <pattern>[/]` with modifiers in
    ///   rsync's order `/ ! x s r p` (`p` only for protocol >= 30, silently
    ///   dropped below, as rsync's receiver does);
    /// * protocol < 29: includes as `+ pattern`, excludes as the bare
    ///   pattern (or `- pattern` when the pattern itself starts with `- ` or
    ///   `+ `); side letters (`s`, `r`) are dropped; a rule needing `/`,
    ///   `!` or `x` is [`FilterError::TooModern`];
    /// * the order of `--delete-excluded` relative to the filter options
    ///   changes what real rsync writes (`-s pat` vs `- pat`); this always
    ///   writes the explicit `-s` form, which the server treats identically.
    /// * directory-only rules get their trailing `/` back.
    pub fn wire_rules(
        &self,
        protocol: i32,
        delete_excluded: bool,
    ) -> Result<Vec<Vec<u8>>, FilterError> {
        let delete_excluded = delete_excluded || self.delete_excluded;
        let mut out = Vec::new();
        for r in &self.rules {
            if r.receiver_side && !r.sender_side {
                continue; // receiver-only: local
            }
            let sender_side = r.sender_side || (delete_excluded && !r.receiver_side);
            let old = protocol < 29;
            let mut prefix: Vec<u8> = Vec::with_capacity(8);
            let mut legal_len = if old { 1 } else { 15 };
            if r.include {
                prefix.push(b'+');
            } else if !old || r.pattern.starts_with(b"- ") || r.pattern.starts_with(b"+ ") {
                prefix.push(b'-');
            } else {
                legal_len = 0;
            }
            if r.abs_path {
                prefix.push(b'/');
            }
            if r.negate {
                prefix.push(b'!');
            }
            if r.xattr {
                prefix.push(b'x');
            }
            if sender_side && !old {
                prefix.push(b's');
            }
            if r.receiver_side && !old {
                prefix.push(b'r');
            }
            if r.perishable && protocol >= 30 {
                prefix.push(b'p');
            }
            let mut body = prefix;
            let too_modern = body.len() > legal_len;
            if legal_len > 0 {
                body.push(b' ');
            }
            body.extend_from_slice(&r.pattern);
            if r.dir_only {
                body.push(b'/');
            }
            if too_modern {
                return Err(FilterError::TooModern {
                    rule: lossy(&body),
                    protocol,
                });
            }
            out.push(body);
        }
        Ok(out)
    }

    /// Receiver-side decision for `--delete`: true if `path` (relative to
    /// the transfer root, `/`-separated, no leading `/`) must not be
    /// deleted because it, or one of its parent directories, is excluded
    /// by the rules that apply on the receiving side (plain excludes unless
    /// `--delete-excluded`, protect rules; include/risk rules un-protect;
    /// hide/show are ignored).  First matching rule wins for each name.
    pub fn protects(&self, path: &[u8], is_dir: bool) -> bool {
        self.protects_inner(path, is_dir, false)
    }

    /// Like [`FilterList::protects`] but for an item inside a directory
    /// that is itself being deleted: perishable (`p`) rules are ignored,
    /// as rsync does.
    pub fn protects_in_deleted_dir(&self, path: &[u8], is_dir: bool) -> bool {
        self.protects_inner(path, is_dir, true)
    }

    fn protects_inner(&self, path: &[u8], is_dir: bool, ignore_perishable: bool) -> bool {
        let de = self.delete_excluded;
        let root = &self.receiver_root;
        excluded_with_parents(path, is_dir, |name, d| {
            self.check(name, d, root, |r| {
                r.applies_to_receiver(de) && !(ignore_perishable && r.perishable)
            })
        })
    }

    /// Sender-side view: true if the server, applying our rules, would leave
    /// `path` out of the transfer -- because it or one of its parent
    /// directories is excluded by a rule that applies on the sending side
    /// (plain include/exclude, hide/show; protect/risk are ignored).
    pub fn excludes_from_transfer(&self, path: &[u8], is_dir: bool) -> bool {
        let root = &self.sender_root;
        excluded_with_parents(path, is_dir, |name, d| {
            self.check(name, d, root, Rule::applies_to_sender)
        })
    }

    /// The exact check rsync 3.5.0's receiver makes on each file-list name
    /// ("rejecting excluded file-list name"): the name itself (not its
    /// parents) against the sender-side rules.
    pub fn rejects_flist_name(&self, path: &[u8], is_dir: bool) -> bool {
        self.check(path, is_dir, &self.sender_root, Rule::applies_to_sender) == Some(false)
    }

    /// First applicable matching rule: Some(true) include, Some(false)
    /// exclude, None no match.
    fn check(
        &self,
        name: &[u8],
        is_dir: bool,
        abs_root: &[u8],
        applies: impl Fn(&Rule) -> bool,
    ) -> Option<bool> {
        self.rules
            .iter()
            .filter(|r| applies(r))
            .find(|r| rule_matches(r, name, is_dir, abs_root))
            .map(|r| r.include)
    }
}

fn trim_slashes(d: &[u8]) -> &[u8] {
    let mut d = d;
    while let [b'/', rest @ ..] = d {
        d = rest;
    }
    while let [rest @ .., b'/'] = d {
        d = rest;
    }
    d
}

/// Apply `check` to each parent directory of `path` (top down) and then
/// to `path` itself; true as soon as one is excluded.
fn excluded_with_parents(
    path: &[u8],
    is_dir: bool,
    check: impl Fn(&[u8], bool) -> Option<bool>,
) -> bool {
    let path = trim_slashes(path);
    for (i, &c) in path.iter().enumerate() {
        if c == b'/' && i > 0 && path[i - 1] != b'/' && check(&path[..i], true) == Some(false) {
            return true;
        }
    }
    check(path, is_dir) == Some(false)
}

#[derive(Debug, Clone, Copy, Default)]
struct RuleFlags {
    include: bool,
    negate: bool,
    abs_path: bool,
    sender_side: bool,
    receiver_side: bool,
    perishable: bool,
    xattr: bool,
}

/// Build a rule from its pattern text (trailing `/` still attached).
fn build_rule(pat: &[u8], f: RuleFlags) -> Rule {
    let mut pat = pat;
    let mut dir_only = false;
    if pat.len() > 1 && pat[pat.len() - 1] == b'/' {
        pat = &pat[..pat.len() - 1];
        dir_only = true;
    }
    let slash_cnt = pat.iter().filter(|&&c| c == b'/').count();
    let wild = pat.iter().any(|&c| matches!(c, b'*' | b'?' | b'['));
    let star2 = if wild {
        pat.windows(2).position(|w| w == b"**")
    } else {
        None
    };
    let wild2 = star2.is_some();
    Rule {
        include: f.include,
        pattern: pat.to_vec(),
        dir_only,
        negate: f.negate,
        abs_path: f.abs_path,
        sender_side: f.sender_side,
        receiver_side: f.receiver_side,
        perishable: f.perishable,
        xattr: f.xattr,
        wild,
        wild2,
        wild2_prefix: star2 == Some(0),
        wild3_suffix: wild2 && pat.ends_with(b"***"),
        slash_cnt,
    }
}

/// Does `s` start with the long rule name `word`, followed by a separator
/// (whitespace, `_`, end) or `,`?  Returns the index of the byte the
/// modifier scan starts from (the last byte of the name, or the `,`).
fn long_name(s: &[u8], word: &[u8]) -> Option<usize> {
    if !s.starts_with(word) {
        return None;
    }
    match s.get(word.len()) {
        None => Some(word.len() - 1),
        Some(&c) if is_space(c) || c == b'_' => Some(word.len() - 1),
        Some(b',') => Some(word.len()),
        _ => None,
    }
}

/// Parse one rule token from `s`.  Returns the parsed rule and the rest of
/// the input (non-empty only when word-splitting), or None at end.
fn parse_token<'a>(
    s: &'a [u8],
    t: Template,
    src: &RuleSource,
) -> Result<Option<(Parsed, &'a [u8])>, FilterError> {
    let mut s = s;
    if t.word_split {
        while let [c, rest @ ..] = s {
            if !is_space(*c) {
                break;
            }
            s = rest;
        }
    }
    if s.is_empty() {
        return Ok(None);
    }
    let full = s; // rule text for messages (to the end of input)
    let at = |i: usize| full.get(i).copied().unwrap_or(0);
    let err_text = || {
        if t.word_split {
            let end = full.iter().position(|&c| is_space(c)).unwrap_or(full.len());
            lossy(&full[..end])
        } else {
            lossy(full)
        }
    };

    let mut f = RuleFlags {
        include: t.include,
        abs_path: t.abs_path,
        perishable: t.perishable,
        ..RuleFlags::default()
    };
    let mut clear = false;
    let mut merge = false;
    let mut m_no_prefixes = false;
    let mut m_word_split = false;
    let mut m_exclude_self = false;
    let pos: usize; // start of the pattern

    if t.no_prefixes {
        pos = 0;
    } else if t.old_prefixes {
        if at(0) == b'-' && at(1) == b' ' {
            f.include = false;
            pos = 2;
        } else if at(0) == b'+' && at(1) == b' ' {
            f.include = true;
            pos = 2;
        } else {
            clear = at(0) == b'!'; // tentative: only a lone "!"
            pos = 0;
        }
    } else {
        let unknown = || FilterError::UnknownRule {
            rule: err_text(),
            source_loc: src.clone(),
        };
        let (ch, mut i) = match at(0) {
            b'c' => (b'!', long_name(full, b"clear").ok_or_else(unknown)?),
            b'd' => (b':', long_name(full, b"dir-merge").ok_or_else(unknown)?),
            b'e' => (b'-', long_name(full, b"exclude").ok_or_else(unknown)?),
            b'h' => (b'H', long_name(full, b"hide").ok_or_else(unknown)?),
            b'i' => (b'+', long_name(full, b"include").ok_or_else(unknown)?),
            b'm' => (b'.', long_name(full, b"merge").ok_or_else(unknown)?),
            b'p' => (b'P', long_name(full, b"protect").ok_or_else(unknown)?),
            b'r' => (b'R', long_name(full, b"risk").ok_or_else(unknown)?),
            b's' => (b'S', long_name(full, b"show").ok_or_else(unknown)?),
            c => (c, if at(1) == b',' { 1 } else { 0 }),
        };
        let mut side_from_prefix = false;
        match ch {
            b':' => {
                return Err(FilterError::Unsupported {
                    what: "dir-merge (per-directory merge files)",
                    rule: err_text(),
                    source_loc: src.clone(),
                });
            }
            b'.' => merge = true,
            b'+' => f.include = true,
            b'-' => {}
            b'S' | b'H' => {
                f.include = ch == b'S';
                f.sender_side = true;
                side_from_prefix = true;
            }
            b'R' | b'P' => {
                f.include = ch == b'R';
                f.receiver_side = true;
                side_from_prefix = true;
            }
            b'!' => clear = true,
            _ => return Err(unknown()),
        }
        if !clear {
            loop {
                i += 1;
                let c = at(i);
                if i >= full.len() || c == b' ' || c == b'_' {
                    break;
                }
                if t.word_split && is_space(c) {
                    i -= 1;
                    break;
                }
                let invalid = || FilterError::InvalidModifier {
                    modifier: c as char,
                    position: i,
                    rule: err_text(),
                    source_loc: src.clone(),
                };
                match c {
                    b'-' | b'+' => {
                        if !merge || m_no_prefixes {
                            return Err(invalid());
                        }
                        m_no_prefixes = true;
                        if c == b'+' {
                            f.include = true;
                        }
                    }
                    b'/' => f.abs_path = true,
                    b'!' => {
                        if merge {
                            return Err(invalid());
                        }
                        f.negate = true;
                    }
                    b'C' => {
                        if m_no_prefixes || side_from_prefix {
                            return Err(invalid());
                        }
                        return Err(FilterError::Unsupported {
                            what: "CVS-exclude ('C') rules",
                            rule: err_text(),
                            source_loc: src.clone(),
                        });
                    }
                    b'e' | b'n' | b'w' => {
                        if !merge {
                            return Err(invalid());
                        }
                        if c == b'e' {
                            m_exclude_self = true;
                        } else if c == b'w' {
                            m_word_split = true;
                        }
                    }
                    b'p' => f.perishable = true,
                    b'r' | b's' => {
                        if side_from_prefix {
                            return Err(invalid());
                        }
                        if c == b'r' {
                            f.receiver_side = true;
                        } else {
                            f.sender_side = true;
                        }
                    }
                    b'x' => f.xattr = true,
                    _ => return Err(invalid()),
                }
            }
        }
        // Skip the rule letter (for '!') or the single separator.
        pos = if i < full.len() { i + 1 } else { i };
    }

    if t.sender_side || t.receiver_side {
        if f.sender_side || f.receiver_side {
            return Err(FilterError::SideConflict {
                rule: err_text(),
                source_loc: src.clone(),
            });
        }
        f.sender_side = t.sender_side;
        f.receiver_side = t.receiver_side;
    }

    let tail = &full[pos.min(full.len())..];
    let len = if t.word_split {
        tail.iter().position(|&c| is_space(c)).unwrap_or(tail.len())
    } else {
        tail.len()
    };
    let pat = &tail[..len];
    let rest = &tail[len..];

    if clear {
        if !t.no_prefixes && !t.old_prefixes && len > 0 {
            return Err(FilterError::ClearHasArgument {
                rule: err_text(),
                source_loc: src.clone(),
            });
        }
        if len <= 1 {
            return Ok(Some((Parsed::Clear, rest)));
        }
        // "!foo" in old syntax is just a pattern.
    } else if len == 0 {
        return Err(FilterError::MissingPattern {
            rule: err_text(),
            source_loc: src.clone(),
        });
    }

    if len >= MAX_PATTERN_LEN {
        return Err(FilterError::TooLong {
            len,
            rule: lossy(&pat[..64]),
            source_loc: src.clone(),
        });
    }

    if merge {
        let name = pat.to_vec();
        let template = Template {
            include: f.include,
            abs_path: f.abs_path,
            perishable: f.perishable,
            sender_side: f.sender_side,
            receiver_side: f.receiver_side,
            no_prefixes: m_no_prefixes,
            old_prefixes: false,
            word_split: m_word_split,
        };
        return Ok(Some((
            Parsed::Merge {
                name,
                template,
                exclude_self: m_exclude_self,
            },
            rest,
        )));
    }
    Ok(Some((Parsed::Rule(build_rule(pat, f)), rest)))
}

/// Does `r` match `name` (path relative to the transfer root)?  Includes
/// the effect of `!` and directory-only rules.  `abs_root` is the directory
/// prepended for absolute-path (`/` modifier) rules.
fn rule_matches(r: &Rule, name: &[u8], is_dir: bool, abs_root: &[u8]) -> bool {
    if name.is_empty() || r.xattr {
        return false;
    }
    let hit = !r.negate;
    let mut text: Vec<u8> = Vec::with_capacity(name.len() + abs_root.len() + 2);
    let mut composed = false;
    if r.slash_cnt == 0 && !r.wild2 {
        // Basename-only match.
        let base = match name.iter().rposition(|&c| c == b'/') {
            Some(i) => &name[i + 1..],
            None => name,
        };
        text.extend_from_slice(base);
    } else if r.abs_path && !abs_root.is_empty() {
        text.extend_from_slice(abs_root);
        text.push(b'/');
        text.extend_from_slice(name);
        composed = true;
    } else if r.wild2_prefix {
        // Let "**/" match at the very start of the path.
        text.push(b'/');
        text.extend_from_slice(name);
        composed = true;
    } else {
        text.extend_from_slice(name);
    }
    if is_dir {
        if r.wild3_suffix {
            // Let a trailing "/***" match the directory itself.
            text.push(b'/');
            composed = true;
        }
    } else if r.dir_only {
        return !hit;
    }

    let mut pat: &[u8] = &r.pattern;
    let anchored = pat.first() == Some(&b'/');
    if anchored {
        pat = &pat[1..];
    }
    let where_: isize = if !anchored && r.slash_cnt > 0 && !r.wild2 {
        r.slash_cnt as isize + 1
    } else if !anchored && !r.wild2_prefix && r.wild2 {
        -1
    } else {
        0
    };

    let matched = if r.wild {
        wild_match_where(pat, &text, where_)
    } else if composed {
        match trailing_elements(&text, where_) {
            Some(t) => t == pat,
            None => false,
        }
    } else if anchored {
        text == pat
    } else {
        text.len() >= pat.len()
            && text.ends_with(pat)
            && (text.len() == pat.len() || text[text.len() - pat.len() - 1] == b'/')
    };
    if matched {
        hit
    } else {
        !hit
    }
}

/// The last `count` `/`-separated elements of `text` (`count <= 0`: all of
/// it), or None if there are fewer.
fn trailing_elements(text: &[u8], count: isize) -> Option<&[u8]> {
    if count <= 0 {
        return Some(text);
    }
    let mut count = count;
    for i in (0..text.len()).rev() {
        if text[i] == b'/' {
            count -= 1;
            if count == 0 {
                return Some(&text[i + 1..]);
            }
        }
    }
    if count == 1 {
        Some(text)
    } else {
        None
    }
}

/// Match with rsync's placement rules: `where_ > 0` matches the last N
/// elements, `< 0` tries the start and after every `/`, `0` the start only.
fn wild_match_where(pat: &[u8], text: &[u8], where_: isize) -> bool {
    let Some(text) = trailing_elements(text, where_) else {
        return false;
    };
    let mut m = dowild(pat, text);
    if m != Wild::Match && where_ < 0 && m != Wild::AbortAll {
        for (i, &c) in text.iter().enumerate() {
            if c == b'/' {
                m = dowild(pat, &text[i + 1..]);
                if m != Wild::NoMatch && m != Wild::AbortToStarStar {
                    break;
                }
            }
        }
    }
    m == Wild::Match
}

/// Public wildcard matcher (whole-string, rsync wildmatch semantics):
/// `*` stops at `/`, `**` does not, `?`, `[...]`, `\` escapes.
pub fn wildmatch(pattern: &[u8], text: &[u8]) -> bool {
    dowild(pattern, text) == Wild::Match
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wild {
    NoMatch,
    Match,
    /// No later starting point can match either.
    AbortAll,
    /// Only a `**` earlier in the pattern could still help.
    AbortToStarStar,
}

fn posix_class(name: &[u8], c: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => is_space(c),
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// Core matcher.  Recursion depth is bounded by the number of `*` runs in
/// the pattern (patterns are limited to MAX_PATTERN_LEN).
fn dowild(p: &[u8], text: &[u8]) -> Wild {
    // Byte at an index, with 0 standing in for "end" as in C strings.
    let pc = |i: usize| p.get(i).copied().unwrap_or(0);
    let mut pi = 0usize;
    let mut ti = 0usize;
    while pi < p.len() {
        let mut p_ch = p[pi];
        let t_ch = match text.get(ti) {
            Some(&c) => c,
            None => {
                if p_ch != b'*' {
                    return Wild::AbortAll;
                }
                0
            }
        };
        match p_ch {
            b'?' => {
                if t_ch == b'/' {
                    return Wild::NoMatch;
                }
            }
            b'*' => {
                pi += 1;
                let special = pc(pi) == b'*';
                while pc(pi) == b'*' {
                    pi += 1;
                }
                if pi >= p.len() {
                    // Trailing "**" matches everything, trailing "*" only
                    // if no '/' remains.
                    if !special && text[ti..].contains(&b'/') {
                        return Wild::NoMatch;
                    }
                    return Wild::Match;
                }
                let rest = &p[pi..];
                while ti < text.len() {
                    let m = dowild(rest, &text[ti..]);
                    if m != Wild::NoMatch {
                        if !special || m != Wild::AbortToStarStar {
                            return m;
                        }
                    } else if !special && text[ti] == b'/' {
                        return Wild::AbortToStarStar;
                    }
                    ti += 1;
                }
                return Wild::AbortAll;
            }
            b'[' => {
                pi += 1;
                p_ch = pc(pi);
                if p_ch == b'^' {
                    p_ch = b'!';
                }
                let negated = p_ch == b'!';
                if negated {
                    pi += 1;
                    p_ch = pc(pi);
                }
                let mut prev_ch: u8 = 0;
                let mut matched = false;
                loop {
                    if pi >= p.len() {
                        return Wild::AbortAll;
                    }
                    if p_ch == b'\\' {
                        pi += 1;
                        if pi >= p.len() {
                            return Wild::AbortAll;
                        }
                        p_ch = p[pi];
                        if t_ch == p_ch {
                            matched = true;
                        }
                    } else if p_ch == b'-' && prev_ch != 0 && pi + 1 < p.len() && p[pi + 1] != b']'
                    {
                        pi += 1;
                        p_ch = p[pi];
                        if p_ch == b'\\' {
                            pi += 1;
                            if pi >= p.len() {
                                return Wild::AbortAll;
                            }
                            p_ch = p[pi];
                        }
                        if t_ch <= p_ch && t_ch >= prev_ch {
                            matched = true;
                        }
                        p_ch = 0;
                    } else if p_ch == b'[' && pc(pi + 1) == b':' {
                        let s = pi + 2;
                        let mut e = s;
                        while e < p.len() && p[e] != b']' {
                            e += 1;
                        }
                        if e >= p.len() {
                            return Wild::AbortAll;
                        }
                        if e == s || p[e - 1] != b':' {
                            // No ":]": treat '[' as an ordinary member.
                            p_ch = b'[';
                            if t_ch == p_ch {
                                matched = true;
                            }
                        } else {
                            match posix_class(&p[s..e - 1], t_ch) {
                                Some(true) => matched = true,
                                Some(false) => {}
                                None => return Wild::AbortAll,
                            }
                            pi = e;
                            p_ch = 0;
                        }
                    } else if t_ch == p_ch {
                        matched = true;
                    }
                    prev_ch = p_ch;
                    pi += 1;
                    p_ch = pc(pi);
                    if p_ch == b']' {
                        break;
                    }
                }
                if matched == negated || t_ch == b'/' {
                    return Wild::NoMatch;
                }
            }
            _ => {
                if p_ch == b'\\' {
                    pi += 1;
                    p_ch = pc(pi);
                    if pi >= p.len() {
                        return Wild::NoMatch;
                    }
                }
                if t_ch != p_ch {
                    return Wild::NoMatch;
                }
            }
        }
        pi += 1;
        ti += 1;
    }
    if ti < text.len() {
        Wild::NoMatch
    } else {
        Wild::Match
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a list from `--filter` rule strings.
    fn fl(rules: &[&str]) -> FilterList {
        let mut f = FilterList::new();
        for r in rules {
            f.add_rule(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
        f
    }

    /// (rules, path, is_dir, excluded-from-transfer) -- derived from the man
    /// page examples and checked against rsync 3.5.0 (local `rsync -a -n`
    /// runs on a scratch tree gave the same transferred set).
    #[test]
    fn transfer_table() {
        let table: &[(&[&str], &str, bool, bool)] = &[
            // "- *.o": basename match at any depth
            (&["- *.o"], "a.o", false, true),
            (&["- *.o"], "dir/sub/x.o", false, true),
            (&["- *.o"], "a.c", false, false),
            (&["- *.o"], "x.o/inner", false, true), // parent dir "x.o" excluded
            // "- /foo": anchored to the transfer root
            (&["- /foo"], "foo", false, true),
            (&["- /foo"], "foo", true, true),
            (&["- /foo"], "sub/foo", false, false),
            (&["- /foo"], "foo/bar/f.c", false, true),
            // "- foo/": directories only
            (&["- foo/"], "foo", true, true),
            (&["- foo/"], "foo", false, false),
            (&["- foo/"], "x/foo/y", false, true),
            (&["- foo/"], "x/foo", false, false),
            // unanchored pattern with '/' matches trailing elements
            (&["- sub/foo"], "sub/foo", true, true),
            (&["- sub/foo"], "a/sub/foo", false, true),
            (&["- sub/foo"], "sub/bar/foo", false, false),
            (&["- sub/foo"], "xsub/foo", false, false),
            (&["- foo/*/bar"], "foo/x/bar", true, true),
            (&["- foo/*/bar"], "foo/bar", false, false),
            (&["- foo/*/bar"], "foo/x/y/bar", true, false),
            (&["- /foo/**/bar"], "foo/x/bar", true, true),
            (&["- /foo/**/bar"], "foo/x/y/bar", true, true),
            (&["- /foo/**/bar"], "foo/bar", true, false),
            // include dirs and .c files, nothing else
            (&["+ */", "+ *.c", "- *"], "d/e/f.c", false, false),
            (&["+ */", "+ *.c", "- *"], "d/e", true, false),
            (&["+ */", "+ *.c", "- *"], "d/e/f.h", false, true),
            (&["+ foo/", "+ foo/bar.c", "- *"], "foo/bar.c", false, false),
            (&["+ foo/", "+ foo/bar.c", "- *"], "foo/baz.c", false, true),
            (
                &["+ foo/", "+ foo/bar.c", "- *"],
                "x/foo/bar.c",
                false,
                true,
            ),
            // first match wins
            (&["- *.o", "+ keep.o"], "keep.o", false, true),
            (&["+ keep.o", "- *.o"], "keep.o", false, false),
            // "dir/***": the directory and everything inside it
            (&["+ foo/***", "- *"], "foo", true, false),
            (&["+ foo/***", "- *"], "foo/x/y/z", false, false),
            (&["+ foo/***", "- *"], "foo", false, true), // a file named foo
            (&["+ foo/***", "- *"], "bar", false, true),
            // "**" crosses '/', "*" does not
            (&["- **/tmp/**"], "tmp/t1", false, true),
            (&["- **/tmp/**"], "a/tmp/b/t2", false, true),
            (&["- **/tmp/**"], "tmp", true, false),
            (&["- /**/tmp/**"], "tmp/t1", false, false),
            (&["- /**/tmp/**"], "a/tmp/t1", false, true),
            (&["- tmp/**"], "a/b/tmp/t3", false, true),
            (&["- /*/tmp"], "a/tmp", true, true),
            (&["- /*/tmp"], "a/b/tmp", true, false),
            (&["- **file.txt"], "x/y/file.txt", false, true),
            (&["- dir/**/*.c"], "dir/sub/deep/w.c", false, true),
            (&["- dir/**/*.c"], "dir/w.c", false, false),
            (&["- x/*/file.txt"], "x/y/file.txt", false, true),
            (&["- x/*/file.txt"], "x/file.txt", false, false),
            // '?' and classes
            (&["- ?.?"], "a.o", false, true),
            (&["- ?.?"], "ab.o", false, false),
            (&["- lit[ab]"], "litb", false, true),
            (&["- lit[ab]"], "lit[ab]", false, false),
            (&["- lit\\[ab]"], "lit[ab]", false, true),
            (&["- [!a-m]*"], "zed", false, true),
            (&["- [!a-m]*"], "bed", false, false),
            (&["- [^a-z]*"], "Bed", false, true),
            (&["- [[:upper:]]*"], "UPPER.TXT", false, true),
            (&["- [[:upper:]]*"], "lower", false, false),
            (&["- [[:digit:]]*"], "9digit", false, true),
            // backslash is literal when the pattern has no wildcard
            (&["- back\\slash"], "back\\slash", false, true),
            (&["- back\\\\slash*"], "back\\slash", false, true),
            (&["- back\\slash*"], "back\\slash", false, false),
            // negation
            (&["-! */"], "file", false, true),
            (&["-! */"], "dir", true, false),
            (&["+ */", "-! *.c"], "a/b.c", false, false),
            (&["+ */", "-! *.c"], "a/b.h", false, true),
            // sides: hide applies to the transfer, protect does not
            (&["H *.c"], "x.c", false, true),
            (&["P *.o"], "x.o", false, false),
            (&["-s bar"], "bar", false, true),
            (&["-r bar"], "bar", false, false),
            // clear
            (&["- *.o", "!", "- *.c"], "a.o", false, false),
            (&["- *.o", "clear", "- *.c"], "a.c", false, true),
            // underscore separator and spaces in patterns
            (&["-_sp ace"], "sp ace", false, true),
            (&["- sp ace"], "sp ace", false, true),
            (&["- sp "], "sp", false, false), // trailing space is part of the pattern
        ];
        for (rules, path, is_dir, want) in table {
            let f = fl(rules);
            assert_eq!(
                f.excludes_from_transfer(path.as_bytes(), *is_dir),
                *want,
                "rules {rules:?} path {path:?} dir {is_dir}"
            );
        }
    }

    #[test]
    fn non_utf8_names() {
        let mut f = FilterList::new();
        f.add_rule_bytes(b"- *\xff.o").unwrap();
        assert!(f.excludes_from_transfer(b"bin\xff.o", false));
        assert!(f.excludes_from_transfer(b"d\xfe/bin\xff.o", false));
        assert!(!f.excludes_from_transfer(b"bin\xfe.o", false));
        let f = fl(&["- ?.o"]);
        assert!(f.excludes_from_transfer(b"\xe9.o", false)); // '?' is one byte
    }

    /// Receiver-side protection; expectations checked against real
    /// `rsync -a --delete` runs (what was / was not deleted).
    #[test]
    fn protects_table() {
        let table: &[(&[&str], &str, bool, bool)] = &[
            (&[], "extra.o", false, false),
            (&["- *.o"], "extra.o", false, true),
            (&["- *.o"], "dir/extra.o", false, true),
            (&["- *.o"], "extra.c", false, false),
            (&["P *.o"], "extra.o", false, true),
            (&["H *.o"], "extra.o", false, false),
            (&["-s *.o"], "extra.o", false, false),
            (&["-r *.c"], "extra.c", false, true),
            (&["- *.o", "R extra.o"], "extra.o", false, true),
            (&["R extra.o", "- *.o"], "extra.o", false, false),
            (&["R extra.o", "- *.o"], "dir/extra.o", false, false),
            (&["+ */", "+ *.c", "- *"], "keep/tmp/old.o", false, true),
            (&["+ */", "+ *.c", "- *"], "olddir/keep.c", false, false),
            // a file inside an excluded directory is protected
            (&["- tmp/"], "tmp/old", false, true),
            (&["- tmp/"], "keep/tmp/old.o", false, true),
            (&["- /newdir/"], "newdir/x.o", false, true),
            (&["- olddir/***"], "olddir", true, true),
            (&["- olddir/***"], "olddir/sub/deep.o", false, true),
            (&["-! *.c"], "extra.o", false, true),
            (&["-! *.c"], "extra.c", false, false),
        ];
        for (rules, path, is_dir, want) in table {
            let f = fl(rules);
            assert_eq!(
                f.protects(path.as_bytes(), *is_dir),
                *want,
                "rules {rules:?} path {path:?}"
            );
        }
    }

    #[test]
    fn perishable_and_delete_excluded() {
        let f = fl(&["-p *.o"]);
        assert!(f.protects(b"extra.o", false));
        assert!(!f.protects_in_deleted_dir(b"newdir/x.o", false));
        let f = fl(&["- *.o"]);
        assert!(f.protects_in_deleted_dir(b"newdir/x.o", false));

        let mut f = fl(&["- *.o", "P keep.o"]);
        f.set_delete_excluded(true);
        assert!(!f.protects(b"a.o", false));
        assert!(f.protects(b"keep.o", false));
        assert!(f.excludes_from_transfer(b"a.o", false));
    }

    #[test]
    fn rejects_flist_name_checks_only_the_name() {
        let f = fl(&["- foo/"]);
        assert!(f.rejects_flist_name(b"foo", true));
        assert!(!f.rejects_flist_name(b"foo/bar", false));
        assert!(f.excludes_from_transfer(b"foo/bar", false));
        let f = fl(&["P *.o"]);
        assert!(!f.rejects_flist_name(b"a.o", false));
    }

    #[test]
    fn abs_path_rules() {
        let mut f = fl(&["-/ /etc/passwd", "-/ subdir/foo"]);
        assert!(!f.excludes_from_transfer(b"passwd", false));
        f.set_sender_root(b"/etc/");
        assert!(f.excludes_from_transfer(b"passwd", false));
        assert!(!f.excludes_from_transfer(b"x/passwd", false));
        // "-/ subdir/foo" matches foo at the root when the root is .../subdir
        f.set_sender_root(b"a/subdir");
        assert!(f.excludes_from_transfer(b"foo", false));
        f.set_receiver_root(b"/home/me/subdir");
        assert!(f.protects(b"foo", false));
    }

    fn wire(f: &FilterList, proto: i32, de: bool) -> Vec<String> {
        f.wire_rules(proto, de)
            .unwrap()
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    /// Byte-exact expectations captured from rsync 3.5.0 acting as the
    /// receiving client (stdin of the server recorded via a fake `-e`).
    #[test]
    fn wire_forms() {
        let f = fl(&[
            "- *.tmp",
            "+ foo/",
            "H hid",
            "P prot",
            "- - dash",
            "-p per",
            "exclude x/",
        ]);
        assert_eq!(
            wire(&f, 32, false),
            ["- *.tmp", "+ foo/", "-s hid", "- - dash", "-p per", "- x/"]
        );
        assert_eq!(
            wire(&f, 29, false),
            ["- *.tmp", "+ foo/", "-s hid", "- - dash", "- per", "- x/"]
        );
        assert_eq!(
            wire(&f, 28, false),
            ["*.tmp", "+ foo/", "hid", "- - dash", "per", "x/"]
        );

        let f = fl(&["-/! /abs", "+! bar", "exclude,sp x*/", "-sr both", "-x xa"]);
        assert_eq!(
            wire(&f, 31, false),
            ["-/! /abs", "+! bar", "-sp x*/", "-sr both", "-x xa"]
        );
        let f = fl(&["-sr both", "S show"]);
        assert_eq!(wire(&f, 28, false), ["both", "+ show"]);
        assert_eq!(wire(&f, 30, false), ["-sr both", "+s show"]);

        // --delete-excluded: side-less rules become sender-side
        let f = fl(&["- de", "R risky", "+ inc"]);
        assert_eq!(wire(&f, 29, true), ["-s de", "+s inc"]);
        assert_eq!(wire(&f, 28, true), ["de", "+ inc"]);

        // empty list
        assert!(FilterList::new().wire_rules(32, false).unwrap().is_empty());
    }

    #[test]
    fn too_modern_for_old_protocols() {
        for r in ["-/ /abs", "-! x", "-x xa", "+! y"] {
            let f = fl(&[r]);
            match f.wire_rules(28, false) {
                Err(FilterError::TooModern { rule, protocol: 28 }) => {
                    assert!(rule.contains(&r[r.find(' ').unwrap() + 1..]), "{rule}")
                }
                other => panic!("{r}: {other:?}"),
            }
            assert!(f.wire_rules(29, false).is_ok());
        }
    }

    #[test]
    fn rule_parsing_forms() {
        let f = fl(&["- a", "exclude b", "include c", "+ d", "P e", "protect f"]);
        let kinds: Vec<_> = f.rules().iter().map(|r| r.kind()).collect();
        use RuleKind::*;
        assert_eq!(
            kinds,
            [Exclude, Exclude, Include, Include, Protect, Protect]
        );
        let f = fl(&[
            "risk a", "R b", "hide c", "H d", "show e", "S f", "-s g", "+r h", "-sr i",
        ]);
        let kinds: Vec<_> = f.rules().iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds,
            [Risk, Risk, Hide, Hide, Show, Show, Hide, Risk, Exclude]
        );

        let f = fl(&["-,/p foo/", "+!_bar", "exclude,s_baz", "include,! qux"]);
        let r = &f.rules()[0];
        assert!(r.abs_path() && r.perishable() && r.dir_only() && !r.anchored());
        assert_eq!(r.pattern(), b"foo");
        assert!(f.rules()[1].negate() && f.rules()[1].is_include());
        assert_eq!(f.rules()[1].pattern(), b"bar");
        assert_eq!(f.rules()[2].kind(), Hide);
        assert!(f.rules()[3].negate());
        assert!(fl(&["- /x"]).rules()[0].anchored());
        // only one separator is consumed
        assert_eq!(fl(&["-  two"]).rules()[0].pattern(), b" two");
        assert_eq!(fl(&["- _u"]).rules()[0].pattern(), b"_u");
    }

    #[test]
    fn old_style_options() {
        let mut f = FilterList::new();
        f.add_exclude("*.o").unwrap();
        f.add_include("keep/").unwrap();
        f.add_exclude("+ inc").unwrap(); // "+ " prefix honoured, as rsync does
        f.add_exclude("- P x").unwrap(); // "P x" is just a pattern here
        let r = f.rules();
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].kind(), r[0].pattern()),
            (RuleKind::Exclude, &b"*.o"[..])
        );
        assert_eq!((r[1].kind(), r[1].dir_only()), (RuleKind::Include, true));
        assert_eq!(
            (r[2].kind(), r[2].pattern()),
            (RuleKind::Include, &b"inc"[..])
        );
        assert_eq!(r[3].pattern(), b"P x");
        f.add_exclude("!").unwrap();
        assert!(f.is_empty());
        f.add_exclude("!x").unwrap();
        assert_eq!(f.rules()[0].pattern(), b"!x");
        // an empty argument adds nothing (rsync ignores it too) ...
        f.add_exclude("").unwrap();
        assert_eq!(f.rules().len(), 1);
        // ... but a prefix with no pattern is an error
        assert!(matches!(
            f.add_exclude("- "),
            Err(FilterError::MissingPattern { .. })
        ));
    }

    #[test]
    fn from_file() {
        let data = b"# comment\n; also comment\n\n*.o\r\n+ keep.o\r- *.tmp\n!\nlast\nsp ace \n";
        let mut f = FilterList::new();
        f.add_from_file(data, false, "ex.txt").unwrap();
        // "!" cleared the three earlier rules
        let pats: Vec<&[u8]> = f.rules().iter().map(|r| r.pattern()).collect();
        assert_eq!(pats, [&b"last"[..], &b"sp ace "[..]]);
        assert_eq!(f.rules()[0].kind(), RuleKind::Exclude);

        let mut f = FilterList::new();
        f.add_from_file(b"*.c\n- *.o\n#x\n", true, "in.txt")
            .unwrap();
        let kinds: Vec<_> = f.rules().iter().map(|r| r.kind()).collect();
        assert_eq!(kinds, [RuleKind::Include, RuleKind::Exclude]);

        let mut f = FilterList::new();
        f.add_from_file0(b"a\nb\0c\0", false, "z").unwrap();
        assert_eq!(f.rules()[0].pattern(), b"a\nb");
        assert_eq!(f.rules().len(), 2);
    }

    #[test]
    fn merge_files() {
        let mut files = std::collections::HashMap::new();
        files.insert("top.rules", &b"- *.o\nmerge inner.rules\n# c\n+ *.c\n"[..]);
        files.insert("inner.rules", &b"P prot\nH hid\n"[..]);
        files.insert("words", &b"  - a + b\n  c"[..]);
        files.insert("words2", &b"  -_a.o\t+_b.c\n -_#c"[..]);
        files.insert("excl", &b"x\n+ y\n"[..]);
        files.insert("sided", &b"- x\nP y\n"[..]);
        files.insert("self", &b"merge self\n"[..]);
        let mut loader = |n: &str| -> Result<Vec<u8>, String> {
            files
                .get(n)
                .map(|b| b.to_vec())
                .ok_or_else(|| format!("no such file {n}"))
        };
        let mut f = FilterList::new();
        f.add_rule_with_loader("merge top.rules", &mut loader)
            .unwrap();
        let got: Vec<_> = f
            .rules()
            .iter()
            .map(|r| (r.kind(), r.pattern().to_vec()))
            .collect();
        use RuleKind::*;
        assert_eq!(
            got,
            [
                (Exclude, b"*.o".to_vec()),
                (Protect, b"prot".to_vec()),
                (Hide, b"hid".to_vec()),
                (Include, b"*.c".to_vec())
            ]
        );

        // word-split files are read word by word (as rsync 3.5.0 does), so a
        // prefix needs '_' to stay attached: "- a" is an error, "-_a" is not
        let mut f = FilterList::new();
        let e = f.add_rule_with_loader(".w words", &mut loader).unwrap_err();
        assert!(
            matches!(&e, FilterError::MissingPattern { rule, source_loc: RuleSource::File { file, .. } } if rule == "-" && file == "words"),
            "{e:?}"
        );
        let mut f = FilterList::new();
        f.add_rule_with_loader(".w words2", &mut loader).unwrap();
        let got: Vec<_> = f
            .rules()
            .iter()
            .map(|r| (r.kind(), r.pattern().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (Exclude, b"a.o".to_vec()),
                (Include, b"b.c".to_vec()),
                (Exclude, b"#c".to_vec())
            ]
        );

        // "merge,-": every line an exclude pattern; 'e' also excludes the file
        let mut f = FilterList::new();
        f.add_rule_with_loader("merge,-e dir/excl", &mut loader)
            .unwrap_err(); // no such file
        let mut f2 = FilterList::new();
        f2.add_rule_with_loader(":- x", &mut loader).unwrap_err();
        files_merge_minus(&mut loader);

        // side-specifying merge rule + side-specifying line -> error with file:line
        let mut f = FilterList::new();
        let e = f
            .add_rule_with_loader("merge,s sided", &mut loader)
            .unwrap_err();
        assert!(
            matches!(&e, FilterError::SideConflict { rule, source_loc } if rule == "P y" && source_loc.to_string() == "sided:2"),
            "{e}"
        );
        // recursion is bounded
        let mut f = FilterList::new();
        assert!(matches!(
            f.add_rule_with_loader(". self", &mut loader),
            Err(FilterError::MergeDepth { .. })
        ));
        // no loader
        let mut f = FilterList::new();
        assert!(matches!(
            f.add_rule("merge x"),
            Err(FilterError::MergeLoad { .. })
        ));
        let _ = f;
    }

    fn files_merge_minus(loader: &mut MergeLoader<'_>) {
        let mut f = FilterList::new();
        f.add_rule_with_loader("merge,-e excl", loader).unwrap();
        let got: Vec<_> = f
            .rules()
            .iter()
            .map(|r| (r.kind(), r.pattern().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (RuleKind::Exclude, b"excl".to_vec()),
                (RuleKind::Exclude, b"x".to_vec()),
                (RuleKind::Exclude, b"+ y".to_vec())
            ]
        );
        let mut f = FilterList::new();
        f.add_rule_with_loader("merge,+/ excl", loader).unwrap();
        assert!(f.rules().iter().all(|r| r.is_include() && r.abs_path()));
    }

    #[test]
    fn bad_rules_name_the_rule() {
        type Check = fn(&FilterError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("x foo", |e| matches!(e, FilterError::UnknownRule { .. })),
            ("excludes foo", |e| {
                matches!(e, FilterError::UnknownRule { .. })
            }),
            ("e foo", |e| matches!(e, FilterError::UnknownRule { .. })),
            ("-q foo", |e| {
                matches!(
                    e,
                    FilterError::InvalidModifier {
                        modifier: 'q',
                        position: 1,
                        ..
                    }
                )
            }),
            ("-e foo", |e| {
                matches!(e, FilterError::InvalidModifier { modifier: 'e', .. })
            }),
            ("Ps foo", |e| {
                matches!(e, FilterError::InvalidModifier { modifier: 's', .. })
            }),
            ("merge,! foo", |e| {
                matches!(e, FilterError::InvalidModifier { modifier: '!', .. })
            }),
            ("-", |e| matches!(e, FilterError::MissingPattern { .. })),
            ("- ", |e| matches!(e, FilterError::MissingPattern { .. })),
            ("exclude", |e| {
                matches!(e, FilterError::MissingPattern { .. })
            }),
            ("! foo", |e| {
                matches!(e, FilterError::ClearHasArgument { .. })
            }),
            ("clear foo", |e| {
                matches!(e, FilterError::ClearHasArgument { .. })
            }),
            ("dir-merge .rules", |e| {
                matches!(e, FilterError::Unsupported { .. })
            }),
            (": .rules", |e| matches!(e, FilterError::Unsupported { .. })),
            ("-C", |e| matches!(e, FilterError::Unsupported { .. })),
        ];
        for (rule, ok) in cases {
            let e = FilterList::new().add_rule(rule).unwrap_err();
            assert!(ok(&e), "{rule}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{:?}", rule)), "{rule}: {msg}");
        }
        // file errors carry file:line
        let e = FilterList::new()
            .add_from_file(b"ok\n\n- \n", false, "ex.list")
            .unwrap_err();
        assert!(e.to_string().contains("ex.list:3"), "{e}");
        // over-long patterns are refused, not truncated
        let long = format!("- {}", "a".repeat(5000));
        assert!(matches!(
            FilterList::new().add_rule(&long),
            Err(FilterError::TooLong { .. })
        ));
    }

    #[test]
    fn wildmatch_basics() {
        let t: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("f*", "foo", true),
            ("*", "a/b", false),
            ("**", "a/b", true),
            ("a/**/b", "a/b", false),
            ("a/**/b", "a/x/y/b", true),
            ("[]]", "]", true),
            ("[!]]", "a", true),
            ("[a-]", "-", true),
            ("[[:alpha:]][[:digit:]]", "a1", true),
            ("[[:nope:]]", "a", false),
            ("[[:alpha:]", "a", false),
            ("a[/]b", "a/b", false),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("[", "[", false),
            ("*[", "a[", false),
            ("ab\\", "ab\\", false),
        ];
        for (p, s, want) in t {
            assert_eq!(wildmatch(p.as_bytes(), s.as_bytes()), *want, "{p} vs {s}");
        }
    }

    #[test]
    fn no_panic_on_odd_input() {
        let odd: &[&[u8]] = &[
            b"",
            b"!",
            b"-",
            b",",
            b"-,",
            b"+,!",
            b"- [",
            b"- [!",
            b"- [[:",
            b"- \\",
            b"- ***",
            b"- /",
            b"- //",
            b"- /***",
            b"- **/",
            b"P",
            b"merge",
            b"\xff\xfe",
            b"- a\0b",
            b"-!",
            b"- [a-",
            b"- [\\",
        ];
        for r in odd {
            let mut f = FilterList::new();
            let _ = f.add_rule_bytes(r);
            let _ = f.add_exclude_bytes(r);
            for p in [&b"a"[..], b"a/b", b"/", b"", b"a//b/", b"***"] {
                let _ = f.excludes_from_transfer(p, true);
                let _ = f.protects(p, false);
            }
            let _ = f.wire_rules(28, true);
            let _ = f.wire_rules(32, false);
            let _ = FilterList::new().add_from_file(r, false, "o");
        }
        // pathological star pattern stays fast (no exponential backtracking)
        let f = fl(&["- *a*a*a*a*a*a*a*a*a*a*a*a*b"]);
        let name = "a".repeat(200);
        assert!(!f.excludes_from_transfer(name.as_bytes(), false));
        let f = fl(&["- **a**a**a**a**a**a**a**a**b"]);
        let name = vec!["a"; 100].join("/");
        assert!(!f.excludes_from_transfer(name.as_bytes(), false));
    }
}
