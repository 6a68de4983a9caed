use mailhook::compact::{self, Options};
use mailhook::config::{CompactConfig, Config};

const USAGE: &str = "usage: mailhook (serve, configured by the environment) | mailhook compact [--through YYYY-MM-DD] \
                     [--min-age SECONDS] [--max-object-bytes N]";

fn main() {
    mailhook::logging::init();
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
        None if std::env::var("_HANDLER").is_ok_and(|h| h == compact::HANDLER) => compact_lambda(),
        None => serve(),
        Some("compact") => compact_once(args.collect()),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            tracing::error!("unknown command {other:?}: {USAGE}");
            2
        }
    };
    std::process::exit(code);
}

fn serve() -> i32 {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    fall_back_from_missing_bundle(config.ssl_cert_file_missing.as_deref());
    match runtime().block_on(mailhook::run(config)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

/// `mailhook compact`: one run; exit 0 only if every eligible partition is done.
fn compact_once(args: Vec<String>) -> i32 {
    let options = match Options::parse(args, time::OffsetDateTime::now_utc()) {
        Ok(options) => options,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let config = match CompactConfig::from_env() {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    fall_back_from_missing_bundle(config.access.ssl_cert_file_missing.as_deref());
    match runtime().block_on(compact::run(&config, &options)) {
        Ok(report) => {
            tracing::info!(through = %options.through, "{report}");
            match report.failure() {
                None => 0,
                Some(message) => {
                    tracing::error!("{message}");
                    1
                }
            }
        }
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

/// The compaction function (`Handler: compact`): one run per invocation.
fn compact_lambda() -> i32 {
    let config = match CompactConfig::from_env() {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    fall_back_from_missing_bundle(config.access.ssl_cert_file_missing.as_deref());
    match runtime().block_on(compact::serve_lambda(config)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

fn config_error(e: &mailhook::config::ConfigError) -> i32 {
    tracing::error!("{e}");
    2
}

/// `SSL_CERT_FILE` named a file that does not exist: unset it, so the TLS stack reads the
/// system's trust store instead of finding no roots at all.
fn fall_back_from_missing_bundle(missing: Option<&str>) {
    if let Some(path) = missing {
        tracing::warn!(path = %path, "SSL_CERT_FILE does not exist; using the system's trust store");
        // SAFETY: no other thread exists yet; the runtime, and with it the S3 client, starts later.
        unsafe { std::env::remove_var("SSL_CERT_FILE") };
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the runtime")
}
