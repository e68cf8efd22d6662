//! Logs: JSON lines on stdout, which the Functions host ships to Application Insights. Nothing
//! logged anywhere in the crate holds a password, key or token (their types redact `Debug`).

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber (`RUST_LOG` overrides the default `info` level). Safe to call twice.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}
