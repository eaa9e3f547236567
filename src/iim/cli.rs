//! iim's command line:
//! `iim [-v] [-q] [-d] [-t] [-f] [-m] [-daemon tag] [-e e] [-c conf] [config-options]`
//! where config-options are `--entry value` for any config entry.
//!
//! Hand-written because iim uses single-dash long options (`-daemon`).
//! Rules implemented:
//! * flags are separate words (`-v -d`, not `-vd`); repeating one is fine;
//! * `-daemon`, `-e`, `-c` take the next word as their value, even if it
//!   starts with `-` (so `-e -30m` works); `-daemon`/`-e`/`-c` given twice is
//!   an error;
//! * `--entry value` or `--entry=value`; the entry must be a known config key;
//!   the value is the next word, whatever it looks like;
//! * a lone `--` ends the options; no positional arguments exist, so
//!   anything left over is an error.
//!
//! The meaning of `-m` is not in the retrieved part of the manual; this
//! parser records it as a flag and `rmirror iim` uses it as "compare the
//! local tree with the remote and exit" (see `src/cli/iim.rs`).

use super::config::{is_known_key, LogLevel, CONFIG_KEYS};
use super::interval::{parse_epoch_spec, EpochSpec, EpochSpecError};

/// Most command-line words accepted.
pub const MAX_ARGS: usize = 1024;
/// Longest single command-line word.
pub const MAX_ARG_BYTES: usize = 64 * 1024;

/// `-daemon tag` or `-daemon path/to/dir/tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// Directory part (where pid/log files live), if given.
    pub dir: Option<String>,
    pub tag: String,
}

/// Parsed iim command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IimArgs {
    /// `-v`
    pub verbose: bool,
    /// `-q`
    pub quiet: bool,
    /// `-d`
    pub debug: bool,
    /// `-t`: only test the config.
    pub test_config: bool,
    /// `-f`: full sync on start-up (overrides `allow_full_syncs`).
    pub full_sync: bool,
    /// `-m` (not documented in the retrieved manual text; rmirror: compare and exit).
    pub m: bool,
    pub daemon: Option<DaemonSpec>,
    /// `-e`
    pub epoch: Option<EpochSpec>,
    /// `-c conf`
    pub config: Option<String>,
    /// `--entry value`, in order.
    pub overrides: Vec<(String, String)>,
}

impl IimArgs {
    /// Log level forced by flags: `-d` beats `-v` beats `-q`.
    pub fn loglevel_override(&self) -> Option<LogLevel> {
        if self.debug {
            Some(LogLevel::Debug)
        } else if self.verbose {
            Some(LogLevel::Verbose)
        } else if self.quiet {
            Some(LogLevel::Quiet)
        } else {
            None
        }
    }

    /// Effective log level given the config's `loglevel`.
    pub fn loglevel(&self, configured: LogLevel) -> LogLevel {
        self.loglevel_override().unwrap_or(configured)
    }

    /// Effective "may do full syncs": `-f` overrides the config.
    pub fn allow_full_syncs(&self, configured: bool) -> bool {
        self.full_sync || configured
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("unknown option {0:?} (usage: iim [-v] [-q] [-d] [-t] [-f] [-m] [-daemon tag] [-e e] [-c conf] [--entry value ...])")]
    UnknownOption(String),
    #[error("unknown config entry in option {option:?}; known entries: {}", CONFIG_KEYS.join(", "))]
    UnknownEntry { option: String },
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {0} given twice")]
    Repeated(&'static str),
    #[error("unexpected argument {0:?}: iim takes no positional arguments")]
    Positional(String),
    #[error("-daemon {0:?}: {1}")]
    BadDaemon(String, &'static str),
    #[error(transparent)]
    BadEpoch(#[from] EpochSpecError),
    #[error("-c needs a file name")]
    EmptyConfig,
    #[error("more than {MAX_ARGS} arguments")]
    TooManyArgs,
    #[error("argument longer than {MAX_ARG_BYTES} bytes")]
    ArgTooLong,
}

fn parse_daemon(v: &str) -> Result<DaemonSpec, CliError> {
    let err = |why| CliError::BadDaemon(v.chars().take(200).collect(), why);
    if v.contains('\0') {
        return Err(err("contains NUL"));
    }
    let (dir, tag) = match v.rfind('/') {
        Some(i) => (Some(&v[..i]), &v[i + 1..]),
        None => (None, v),
    };
    if tag.is_empty() {
        return Err(err(
            "needs a tag (e.g. -daemon cpan or -daemon /var/run/iim/cpan)",
        ));
    }
    if tag == "." || tag == ".." {
        return Err(err("the tag must be a name, not '.' or '..'"));
    }
    let dir = dir.map(|d| {
        if d.is_empty() {
            "/".to_string()
        } else {
            d.to_string()
        }
    });
    Ok(DaemonSpec {
        dir,
        tag: tag.to_string(),
    })
}

/// Parse iim's arguments (without the program name).
pub fn parse_args<I, S>(args: I) -> Result<IimArgs, CliError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut words: Vec<String> = Vec::new();
    for a in args {
        if words.len() >= MAX_ARGS {
            return Err(CliError::TooManyArgs);
        }
        let a = a.as_ref();
        if a.len() > MAX_ARG_BYTES {
            return Err(CliError::ArgTooLong);
        }
        words.push(a.to_string());
    }
    let mut out = IimArgs::default();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-v" => out.verbose = true,
            "-q" => out.quiet = true,
            "-d" => out.debug = true,
            "-t" => out.test_config = true,
            "-f" => out.full_sync = true,
            "-m" => out.m = true,
            "-daemon" => {
                let v = it
                    .next()
                    .ok_or_else(|| CliError::MissingValue("-daemon".into()))?;
                if out.daemon.is_some() {
                    return Err(CliError::Repeated("-daemon"));
                }
                out.daemon = Some(parse_daemon(&v)?);
            }
            "-e" => {
                let v = it
                    .next()
                    .ok_or_else(|| CliError::MissingValue("-e".into()))?;
                if out.epoch.is_some() {
                    return Err(CliError::Repeated("-e"));
                }
                out.epoch = Some(parse_epoch_spec(&v)?);
            }
            "-c" => {
                let v = it
                    .next()
                    .ok_or_else(|| CliError::MissingValue("-c".into()))?;
                if out.config.is_some() {
                    return Err(CliError::Repeated("-c"));
                }
                if v.is_empty() {
                    return Err(CliError::EmptyConfig);
                }
                out.config = Some(v);
            }
            "--" => {
                if let Some(rest) = it.next() {
                    return Err(CliError::Positional(rest));
                }
                break;
            }
            _ if w.starts_with("--") => {
                let body = &w[2..];
                let (key, inline) = match body.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (body, None),
                };
                if !is_known_key(key) {
                    return Err(CliError::UnknownEntry {
                        option: w.chars().take(80).collect(),
                    });
                }
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| CliError::MissingValue(format!("--{key}")))?,
                };
                out.overrides.push((key.to_string(), value));
            }
            _ if w.starts_with('-') && w.len() > 1 => {
                return Err(CliError::UnknownOption(w.chars().take(80).collect()))
            }
            _ => return Err(CliError::Positional(w.chars().take(200).collect())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iim::interval::Span;
    use crate::recent::Epoch;

    fn p(s: &str) -> Result<IimArgs, CliError> {
        parse_args(s.split_whitespace())
    }

    #[test]
    fn synopsis() {
        let a = p("-v -q -d -t -f -m -daemon cpan -e -30m -c /etc/iim.conf").unwrap();
        assert!(a.verbose && a.quiet && a.debug && a.test_config && a.full_sync && a.m);
        assert_eq!(
            a.daemon,
            Some(DaemonSpec {
                dir: None,
                tag: "cpan".into()
            })
        );
        assert_eq!(a.epoch, Some(EpochSpec::Ago(Span::from_secs(1800))));
        assert_eq!(a.config.as_deref(), Some("/etc/iim.conf"));
        assert_eq!(a.loglevel_override(), Some(LogLevel::Debug));
        assert_eq!(p("").unwrap(), IimArgs::default());
    }

    #[test]
    fn daemon_forms() {
        let a = p("-daemon path/to/dir/tag").unwrap();
        assert_eq!(
            a.daemon,
            Some(DaemonSpec {
                dir: Some("path/to/dir".into()),
                tag: "tag".into()
            })
        );
        let a = p("-daemon /tag").unwrap();
        assert_eq!(
            a.daemon,
            Some(DaemonSpec {
                dir: Some("/".into()),
                tag: "tag".into()
            })
        );
        assert!(matches!(p("-daemon dir/"), Err(CliError::BadDaemon(..))));
        assert!(matches!(p("-daemon a/.."), Err(CliError::BadDaemon(..))));
        assert!(matches!(p("-daemon"), Err(CliError::MissingValue(_))));
        assert!(matches!(
            p("-daemon a -daemon b"),
            Err(CliError::Repeated("-daemon"))
        ));
    }

    #[test]
    fn epoch_forms() {
        assert_eq!(
            p("-e -2h").unwrap().epoch,
            Some(EpochSpec::Ago(Span::from_secs(7200)))
        );
        assert_eq!(
            p("-e 1325093856").unwrap().epoch,
            Some(EpochSpec::Absolute(Epoch::from_secs(1325093856)))
        );
        assert!(matches!(p("-e soon"), Err(CliError::BadEpoch(_))));
        assert!(matches!(p("-e"), Err(CliError::MissingValue(_))));
        assert!(matches!(p("-e -1h -e -2h"), Err(CliError::Repeated("-e"))));
    }

    #[test]
    fn entry_overrides() {
        let a = p("--loglevel debug --scoreboard_file /a --scoreboard_file /b --timeout=22 --sleep_init_epoch -5m").unwrap();
        assert_eq!(
            a.overrides,
            vec![
                ("loglevel".to_string(), "debug".to_string()),
                ("scoreboard_file".to_string(), "/a".to_string()),
                ("scoreboard_file".to_string(), "/b".to_string()),
                ("timeout".to_string(), "22".to_string()),
                ("sleep_init_epoch".to_string(), "-5m".to_string()),
            ]
        );
        for key in CONFIG_KEYS {
            let a = parse_args([format!("--{key}"), "v".to_string()]).unwrap();
            assert_eq!(a.overrides, vec![(key.to_string(), "v".to_string())]);
        }
        assert!(matches!(p("--bogus 1"), Err(CliError::UnknownEntry { .. })));
        assert!(matches!(p("--timeout"), Err(CliError::MissingValue(_))));
        // value may be empty with the = form
        assert_eq!(
            p("--user=").unwrap().overrides,
            vec![("user".to_string(), String::new())]
        );
    }

    #[test]
    fn bad_words() {
        assert!(matches!(p("-x"), Err(CliError::UnknownOption(_))));
        assert!(matches!(p("-vd"), Err(CliError::UnknownOption(_))));
        assert!(matches!(p("-D"), Err(CliError::UnknownOption(_))));
        assert!(matches!(p("conf"), Err(CliError::Positional(_))));
        assert!(matches!(p("-"), Err(CliError::Positional(_))));
        assert!(matches!(p("-c"), Err(CliError::MissingValue(_))));
        assert!(matches!(parse_args(["-c", ""]), Err(CliError::EmptyConfig)));
        assert!(matches!(p("-- x"), Err(CliError::Positional(_))));
        assert!(p("-v --").is_ok());
        let many = vec!["-v"; MAX_ARGS + 1];
        assert!(matches!(parse_args(many), Err(CliError::TooManyArgs)));
    }

    #[test]
    fn flag_combinations() {
        let a = p("-q").unwrap();
        assert_eq!(a.loglevel(LogLevel::Terse), LogLevel::Quiet);
        assert_eq!(
            p("").unwrap().loglevel(LogLevel::Verbose),
            LogLevel::Verbose
        );
        assert_eq!(
            p("-q -v").unwrap().loglevel(LogLevel::Terse),
            LogLevel::Verbose
        );
        assert!(p("-f").unwrap().allow_full_syncs(false));
        assert!(!p("").unwrap().allow_full_syncs(false));
    }
}
