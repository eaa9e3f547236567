//! Pure parsing for the iim instant-mirroring client's dialect
//! (Henk P. Penning's `iim`): interval specs, the config file format and
//! the command line.  No I/O: included config files come from a resolver.

pub mod cli;
pub mod config;
pub mod interval;

pub use cli::{parse_args, CliError, DaemonSpec, IimArgs};
pub use config::{
    parse_config, read_entries, ConfigError, IimConfig, IncludeResolver, LogLevel, NoIncludes,
    NotNeeded, RawEntry, Rotate, CONFIG_KEYS,
};
pub use interval::{parse_epoch_spec, parse_interval, EpochSpec, EpochSpecError, Span, SpecError};
