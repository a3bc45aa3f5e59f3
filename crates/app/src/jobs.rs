//! Background jobs of one instance, stopped with the server.
//!
//! - idempotency janitor: every hour, deletes idempotency records past their
//!   retention. Every instance runs it; the DELETE is idempotent, so no lock
//!   is needed.

use std::time::Duration;

use infra::postgres::PgIdempotencyStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const JANITOR_FIRST_RUN: Duration = Duration::from_secs(60);
const JANITOR_INTERVAL: Duration = Duration::from_secs(3600);

/// The running jobs and the switch that stops them.
pub(crate) struct Jobs {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Jobs {
    pub(crate) fn start(janitor: PgIdempotencyStore) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![tokio::spawn(run_janitor(janitor, stopped))];
        Self { stop, tasks }
    }

    /// Asks every job to stop and waits for it (a job finishes its current
    /// step first; each step is bounded by the Postgres operation timeout).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn run_janitor(janitor: PgIdempotencyStore, mut stopped: watch::Receiver<bool>) {
    let mut wait = JANITOR_FIRST_RUN;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let purge = tokio::select! {
            result = janitor.purge() => result,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match purge {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged expired idempotency records"),
            Err(err) => {
                tracing::warn!(error = %err, "idempotency purge failed; retrying next hour")
            }
        }
        wait = JANITOR_INTERVAL;
    }
}
