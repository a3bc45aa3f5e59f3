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
use infra::postgres::{PgCouponStore, PgPoolSettings, connect_pool};
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
    let store = Arc::new(PgCouponStore::new(pg.clone()));
    let gate = Arc::new(RedisIssueGate::new(
        redis,
        RedisKeys::new(config.redis_key_prefix.clone()),
        pg,
    ));
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
