use mailhook::config::Config;

fn main() {
    lambda_http::tracing::init_default_subscriber();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = &config.ssl_cert_file_missing {
        tracing::warn!(path = %path, "SSL_CERT_FILE does not exist; using the system's trust store");
        // SAFETY: no other thread exists yet; the runtime, and with it the S3 client, starts below.
        unsafe { std::env::remove_var("SSL_CERT_FILE") };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the runtime");
    if let Err(e) = runtime.block_on(mailhook::run(config)) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
