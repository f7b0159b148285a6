//! `/metrics` and `/healthz` for processes whose work is not HTTP (`alluvium run`,
//! `alluvium ingest cdc`).

use std::net::SocketAddr;
use std::sync::Arc;

use alluvium_connectors::rest::metrics_router;
use anyhow::{Context, Result};

/// Serves `/metrics` and `/healthz` from a thread of its own.
pub fn serve_in_background(
    addr: SocketAddr,
    registry: Arc<prometheus_client::registry::Registry>,
) -> Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("listening on {addr} for metrics"))?;
    listener
        .set_nonblocking(true)
        .context("configuring the metrics listener")?;
    let local = listener
        .local_addr()
        .context("reading the metrics address")?;
    println!("metrics on http://{local}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "metrics server runtime"),
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "metrics listener"),
                };
                if let Err(e) = axum::serve(listener, metrics_router(registry)).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        })
        .context("starting the metrics thread")?;
    Ok(())
}
