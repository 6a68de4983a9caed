use mailhook::config::Config;

#[tokio::main]
async fn main() {
    lambda_http::tracing::init_default_subscriber();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = mailhook::run(config).await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
