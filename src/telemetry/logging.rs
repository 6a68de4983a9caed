//! Logging, set up the way lambda_http's `init_default_subscriber` does it (Lambda's advanced
//! logging controls: `AWS_LAMBDA_LOG_FORMAT=JSON` for JSON lines; the level from
//! `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO; no targets), with tracing-subscriber's
//! `Targets` filter in place of `EnvFilter`. A JSON line carries its RFC 3339 `timestamp`:
//! Lambda's log-level filtering takes a line without one as INFO, so at WARN and above it would
//! drop every warning and error. A text line has none, since Lambda adds its own. `Targets`
//! reads the same `level` and `target=level` directives. It lacks only EnvFilter's span and field
//! matching, whose regex engine cost the zip more than its worth (BENCHMARKS.md).

use lambda_http::tracing::subscriber::filter::{LevelFilter, Targets};
use lambda_http::tracing::subscriber::{self, prelude::*};

/// Installs the global subscriber, writing to stdout.
pub fn init() {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
    let filter = filter(var("AWS_LAMBDA_LOG_LEVEL").or_else(|| var("RUST_LOG")).as_deref());
    let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let layer = subscriber::fmt::layer().with_target(false);
    if json {
        // The innermost span once, as `span`: at the default INFO that is lambda_runtime's
        // invocation span, with the request id; the list of enclosing spans would repeat it on
        // every line. (At DEBUG a line inside an SDK span names that span instead; mailhook's own
        // lines carry `request_id` themselves.)
        subscriber::registry().with(layer.json().with_span_list(false).with_filter(filter)).init();
    } else {
        subscriber::registry().with(layer.without_time().with_filter(filter)).init();
    }
}

/// The filter a level setting gives: `DEBUG`, `info`, `mailhook=debug,warn` and so on. Lambda's
/// `FATAL` is ERROR; without a bare level the rest is at INFO; a setting that does not parse
/// gives INFO, as lambda_http's does.
pub fn filter(setting: Option<&str>) -> Targets {
    let setting = setting.unwrap_or("INFO").trim();
    if setting.eq_ignore_ascii_case("fatal") {
        return Targets::new().with_default(LevelFilter::ERROR);
    }
    match setting.parse::<Targets>() {
        Ok(targets) if targets.default_level().is_some() => targets,
        Ok(targets) => targets.with_default(LevelFilter::INFO),
        Err(_) => Targets::new().with_default(LevelFilter::INFO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::tracing::Level;

    fn enabled(setting: Option<&str>, target: &str, level: Level) -> bool {
        filter(setting).would_enable(target, &level)
    }

    #[test]
    fn lambda_levels_and_rust_log_directives() {
        assert!(enabled(None, "mailhook", Level::INFO));
        assert!(!enabled(None, "mailhook", Level::DEBUG));
        assert!(enabled(Some("DEBUG"), "aws_smithy_runtime", Level::DEBUG));
        assert!(!enabled(Some("WARN"), "mailhook", Level::INFO));
        assert!(enabled(Some("WARN"), "mailhook", Level::WARN));
        assert!(enabled(Some("FATAL"), "mailhook", Level::ERROR));
        assert!(!enabled(Some("FATAL"), "mailhook", Level::WARN));
        assert!(enabled(Some("mailhook=debug"), "mailhook::http", Level::DEBUG));
        assert!(enabled(Some("mailhook=debug"), "hyper", Level::INFO), "the rest stays at INFO");
        assert!(!enabled(Some("mailhook=debug"), "hyper", Level::DEBUG));
        assert!(enabled(Some("warn,mailhook=debug"), "mailhook", Level::DEBUG));
        assert!(!enabled(Some("warn,mailhook=debug"), "hyper", Level::INFO));
        assert!(enabled(Some("no such level!"), "mailhook", Level::INFO));
        assert!(!enabled(Some("no such level!"), "mailhook", Level::DEBUG));
    }
}
