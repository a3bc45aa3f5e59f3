//! The service as a library: configuration, wiring of adapters into use cases
//! and routes, and the server's life cycle. `main.rs` only parses the command
//! line and calls in here; end-to-end tests start the same [`Application`] on
//! port 0.

pub mod config;
mod demo;
mod import;
mod jobs;
mod tail;
pub mod telemetry;
mod wiring;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::HttpServer;
use actix_web::dev::{Server, ServerHandle};
use anyhow::Context;

pub use crate::config::Config;
pub use crate::import::coupons_import;
pub use crate::tail::events_tail;

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    handle: ServerHandle,
    jobs: jobs::Jobs,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Prepares everything the service needs: creates the database when it is
    /// missing and migrates it (retrying while Postgres is still starting),
    /// builds the pools, wires the use cases, ensures the admin account, and
    /// binds the listener (port 0 picks a free port).
    ///
    /// # Errors
    /// When Postgres stays unreachable for `startup_timeout`, a migration
    /// fails, or the address cannot be bound.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        prepare_database(&config).await?;
        let components = wiring::build(&config).await?;
        let state = components.web;
        let jobs = jobs::Jobs::start(components.jobs);

        let listener = TcpListener::bind(config.http_addr)
            .with_context(|| format!("binding {}", config.http_addr))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || web::app(state.clone()))
            .workers(config.workers)
            .shutdown_timeout(config.shutdown_timeout.as_secs())
            // Signals are ours to handle: see `run_until_stopped`.
            .disable_signals()
            .listen(listener)?
            .run();
        let handle = server.handle();
        tracing::info!(port, "listening");
        Ok(Self {
            port,
            server,
            handle,
            jobs,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then stops accepting connections,
    /// lets in-flight requests finish (up to the shutdown timeout) and returns.
    ///
    /// # Errors
    /// When the server fails while running.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.handle;
        let server = tokio::spawn(self.server);
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        handle.stop(true).await;
        server.await.context("server task panicked")??;
        self.jobs.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Creates the database when missing and applies pending migrations (the
/// `app migrate` command; `build` does the same on every start).
///
/// # Errors
/// When Postgres stays unreachable for `startup_timeout` or a migration fails.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    prepare_database(config).await
}

/// Creates and migrates the database, retrying with backoff while Postgres is
/// not reachable yet (a compose file starts it next to us).
async fn prepare_database(config: &Config) -> anyhow::Result<()> {
    let deadline = Instant::now() + config.startup_timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            infra::postgres::ensure_database(&config.database_url, config.dependency_timeout)
                .await?;
            infra::postgres::run_migrations(&config.database_url).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() + delay < deadline => {
                tracing::warn!(error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64, "Postgres not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err.context("preparing the database")),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
