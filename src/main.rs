use mailhook::compact::{self, Options};
use mailhook::config::{CompactConfig, Config};

const USAGE: &str =
    "usage: mailhook (serve, configured by the environment) | mailhook compact [flags: see mailhook compact --help]";

/// What to run, from the arguments and `_HANDLER`.
enum Command {
    Serve,
    CompactOnce(Vec<String>),
    CompactLambda,
    Help(&'static str),
}

/// How a command ended: 0 done, 1 failed while running, 2 refused to start (arguments or
/// configuration), 3 another compaction holds the archive. The message is logged once.
type Outcome = Result<(), (i32, String)>;

fn main() {
    mailhook::logging::init();
    let mut args = std::env::args().skip(1);
    let command = match args.next().as_deref() {
        None if std::env::var("_HANDLER").is_ok_and(|h| h == compact::HANDLER) => Ok(Command::CompactLambda),
        None => Ok(Command::Serve),
        Some("compact") => Ok(Command::CompactOnce(args.collect())),
        Some("-h" | "--help") => Ok(Command::Help(USAGE)),
        Some(other) => Err((2, format!("unknown command {other:?}: {USAGE}"))),
    };
    let code = match command.and_then(run) {
        Ok(()) => 0,
        Err((code, message)) => {
            tracing::error!("{message}");
            code
        }
    };
    std::process::exit(code);
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Help(usage) => {
            println!("{usage}");
            Ok(())
        }
        Command::Serve => {
            let config = Config::from_env().map_err(refused)?;
            let lambda = config.runtime == mailhook::config::Runtime::Lambda;
            runtime(lambda).block_on(mailhook::run(config)).map_err(failed)
        }
        Command::CompactLambda => {
            let config = CompactConfig::from_env().map_err(refused)?;
            runtime(true).block_on(compact::serve_lambda(config)).map_err(failed)
        }
        Command::CompactOnce(args) => {
            let options = match Options::parse(args, time::OffsetDateTime::now_utc()) {
                Err(usage) if usage == compact::USAGE => return run(Command::Help(compact::USAGE)),
                parsed => parsed.map_err(|e| (2, e))?,
            };
            let config = CompactConfig::from_env().map_err(refused)?;
            // One gzip stream takes one core, and the GETs feeding it are I/O: on one thread, no
            // response crosses threads to reach it (BENCHMARKS.md, compaction).
            let report =
                runtime(true).block_on(compact::run(&config, &options)).map_err(|e| (e.exit_code(), e.to_string()))?;
            tracing::info!(through = %options.through, "{report}");
            report.failure().map_or(Ok(()), |message| Err((1, message)))
        }
    }
}

fn refused(e: mailhook::config::ConfigError) -> (i32, String) {
    (2, e.to_string())
}

fn failed(e: mailhook::Error) -> (i32, String) {
    (1, e.to_string())
}

/// Under Lambda one request (or one compaction run) is in flight at a time, so a thread of its
/// own is all the runtime needs, and Init spawns no worker threads (BENCHMARKS.md, cold start).
/// A compaction run is one thread's work anywhere. The local server serves many connections at
/// once on every core.
fn runtime(single: bool) -> tokio::runtime::Runtime {
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().expect("starting the runtime")
}
