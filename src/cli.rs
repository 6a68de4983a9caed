//! The command line, written once: which command to run, the usage lines, and the flags of
//! `mailhook compact`.

use std::time::Duration;

use time::OffsetDateTime;

use crate::compact::{self, Options};
use crate::layout::parse_date;

/// The usage line of `mailhook`.
pub const USAGE: &str =
    "usage: mailhook (serve, configured by the environment) | mailhook compact [flags: see mailhook compact --help]";
/// The usage line of `mailhook compact`.
pub const COMPACT_USAGE: &str = "usage: mailhook compact [--through YYYY-MM-DD] [--min-age SECONDS] \
                                 [--max-object-bytes N] [--lease SECONDS] [--progress SECONDS]";

/// What to run.
#[derive(Debug)]
pub enum Command {
    /// Receive webhooks: under Lambda, or as a local server (`config::Runtime`).
    Serve,
    /// `mailhook compact [flags]`: one run.
    Compact(Options),
    /// The compaction function: `_HANDLER` is `compact`, one run per invocation.
    CompactLambda,
    /// Print this usage line, and succeed.
    Help(&'static str),
}

/// The command `args` (without the program's name) and `handler` (`_HANDLER`) name, at `now`;
/// `Err` is the message for a bad argument.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    handler: Option<&str>,
    now: OffsetDateTime,
) -> Result<Command, String> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        None if handler == Some(compact::HANDLER) => Ok(Command::CompactLambda),
        None => Ok(Command::Serve),
        Some("compact") => compact_flags(args, now),
        Some("-h" | "--help") => Ok(Command::Help(USAGE)),
        Some(other) => Err(format!("unknown command {other:?}: {USAGE}")),
    }
}

/// Reads `mailhook compact`'s flags over the defaults for a run at `now`.
fn compact_flags(args: impl IntoIterator<Item = String>, now: OffsetDateTime) -> Result<Command, String> {
    let mut options = Options::defaults(now);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (flag, None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--through" => {
                options.through =
                    parse_date(&value()?).ok_or_else(|| "--through must be a date such as 2026-11-26".to_owned())?
            }
            "--min-age" => {
                let v = value()?;
                options.min_age = Duration::from_secs(
                    v.parse().map_err(|_| format!("--min-age must be a whole number of seconds, got {v:?}"))?,
                );
            }
            "--max-object-bytes" => {
                let v = value()?;
                options.max_object_bytes = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("--max-object-bytes must be a whole number of bytes, got {v:?}"))?;
            }
            "--lease" => options.lease = seconds(&flag, &value()?, 2)?,
            "--progress" => options.progress_every = seconds(&flag, &value()?, 1)?,
            "-h" | "--help" => return Ok(Command::Help(COMPACT_USAGE)),
            other => return Err(format!("unknown argument {other:?}: {COMPACT_USAGE}")),
        }
    }
    Ok(Command::Compact(options))
}

/// A flag's whole seconds, from `min` to a day.
fn seconds(flag: &str, v: &str, min: u64) -> Result<Duration, String> {
    v.parse()
        .ok()
        .filter(|n| (min..=86_400).contains(n))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{flag} must be whole seconds from {min} to 86400, got {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let mut all = vec!["compact".to_owned()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        match super::parse(all, None, time::macros::datetime!(2026-03-01 00:30 UTC))? {
            Command::Compact(options) => Ok(options),
            Command::Help(usage) => Err(usage.to_owned()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_come_from_the_first_argument_or_the_handler() {
        let now = OffsetDateTime::now_utc();
        let command = |args: &[&str], handler| super::parse(args.iter().map(|s| (*s).to_owned()), handler, now);
        assert!(matches!(command(&[], None), Ok(Command::Serve)));
        assert!(matches!(command(&[], Some("bootstrap")), Ok(Command::Serve)));
        assert!(matches!(command(&[], Some("compact")), Ok(Command::CompactLambda)));
        assert!(matches!(command(&["compact"], None), Ok(Command::Compact(_))));
        assert!(matches!(command(&["--help"], None), Ok(Command::Help(USAGE))));
        assert_eq!(command(&["serve"], None).unwrap_err(), format!("unknown command \"serve\": {USAGE}"));
    }

    #[test]
    fn flags_are_read_and_checked() {
        let o = parse(&["--through", "2026-01-31", "--min-age=0", "--max-object-bytes", "1000"]).unwrap();
        assert_eq!(o.through, time::macros::date!(2026 - 01 - 31));
        assert_eq!(o.min_age, Duration::ZERO);
        assert_eq!(o.max_object_bytes, 1000);
        assert_eq!(parse(&[]).unwrap().through, time::macros::date!(2026 - 02 - 27), "the defaults");
        assert!(parse(&["--through", "2026-02-30"]).unwrap_err().contains("--through"));
        assert!(parse(&["--min-age", "-1"]).unwrap_err().contains("--min-age"));
        assert!(parse(&["--min-age"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--max-object-bytes", "0"]).unwrap_err().contains("--max-object-bytes"));
        assert_eq!(parse(&["--lease", "30"]).unwrap().lease, Duration::from_secs(30));
        assert!(parse(&["--lease", "1"]).unwrap_err().contains("--lease"));
        assert_eq!(parse(&["--progress", "1"]).unwrap().progress_every, Duration::from_secs(1));
        assert_eq!(
            parse(&["--progress=0"]).unwrap_err(),
            "--progress must be whole seconds from 1 to 86400, got \"0\""
        );
        assert!(parse(&["--dry-run"]).unwrap_err().contains(COMPACT_USAGE));
    }

    #[test]
    fn help_is_the_usage_line() {
        assert_eq!(parse(&["--help"]).unwrap_err(), COMPACT_USAGE);
        assert_eq!(parse(&["-h"]).unwrap_err(), COMPACT_USAGE);
    }
}
