//! `mailhook`: the webhook receiver (under Lambda or as a local server) and `mailhook compact`,
//! in one binary, which is also the Lambda bootstrap of both functions.
//!
//! Exit codes: 0 done, 1 failed while running, 2 refused to start (arguments or configuration),
//! 3 another compaction holds the archive. The message is logged once.

fn main() {
    mailhook::telemetry::logging::init();
    let handler = std::env::var("_HANDLER").ok();
    let command = mailhook::cli::parse(std::env::args().skip(1), handler.as_deref(), time::OffsetDateTime::now_utc())
        .map_err(mailhook::Error::Usage);
    let code = match command.and_then(mailhook::execute) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
