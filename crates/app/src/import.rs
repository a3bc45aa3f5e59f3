//! `app coupons import --campaign ID FILE`: the CSV import of the admin API,
//! from a file, with a progress bar on a terminal and the same summary (one
//! JSON object on standard output).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use application::coupon::ImportCodes;
use domain::coupon::CampaignId;
use futures_util::stream;
use indicatif::{ProgressBar, ProgressStyle};
use infra::postgres::{PgPoolSettings, connect_pool};
use infra::redis::{RedisIssueGate, RedisKeys};
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::config::Config;

const CHUNK: usize = 64 * 1024;

/// Imports `file` into the campaign's pool and writes the summary to `out`.
///
/// # Errors
/// When the file cannot be read, the campaign does not exist, or Postgres fails.
pub async fn coupons_import(
    config: &Config,
    campaign: i64,
    file: &Path,
    out: &mut (impl Write + Send),
) -> anyhow::Result<()> {
    let pg = connect_pool(&PgPoolSettings {
        url: config.database_url.clone(),
        max_size: 2,
        timeout: config.dependency_timeout,
        statement_timeout: config.statement_timeout,
    })?;
    let redis = config.redis_pool(1)?;
    let keys = RedisKeys::new(config.redis_key_prefix.clone());
    // The service may cache the pool's counts even if this process's
    // environment says off: the codes added here must invalidate them.
    let config = Config {
        read_cache_bound: config
            .read_cache_bound
            .or(Some(std::time::Duration::from_secs(1))),
        ..config.clone()
    };
    let counts = crate::wiring::read_cache(&config, &pg, &redis, &keys, "campaign_counts");
    let store = crate::wiring::coupon_store(&pg, counts);
    let gate = Arc::new(RedisIssueGate::new(redis, keys, pg));
    let import = ImportCodes::new(store, gate);

    let handle = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let size = handle.metadata().await.map(|m| m.len()).unwrap_or(0);
    // Drawn on standard error, and only when it is a terminal.
    let progress = ProgressBar::new(size);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let bar = progress.clone();
    let chunks = stream::unfold(handle, move |mut handle| {
        let bar = bar.clone();
        async move {
            let mut buffer = vec![0u8; CHUNK];
            match handle.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    bar.inc(n as u64);
                    Some((Ok(buffer), handle))
                }
                Err(e) => Some((Err(e), handle)),
            }
        }
    });
    let report = import.execute(CampaignId::new(campaign), chunks).await;
    progress.finish_and_clear();
    let report = report.map_err(|e| anyhow::anyhow!("{e}"))?;
    let summary = json!({
        "imported": report.imported,
        "duplicates": report.duplicates,
        "rejected": report.rejected.iter().map(|r| json!({"line": r.line, "reason": r.reason})).collect::<Vec<_>>(),
        "rejectedCount": report.rejected_count,
    });
    writeln!(out, "{summary}").context("writing the summary")?;
    Ok(())
}
