//! `loadtest soak --minutes N`: a steady mixed load at about half the
//! service's capacity (128 connections by default) for a long time, and
//! what drifts (`docs/reliability.md`, "Soak").
//!
//! The mix (`mix`): 35% orders, 25% investments, 10% coupon issues, 5%
//! charges, 25% reads (a product, a page of products, the balance, an
//! investment product). Each minute it prints one row: requests and their
//! rate, the p99 latency of that minute's requests, their 5xx and requests
//! without an answer, and, with `--app-pid`, the app's resident memory and
//! open sockets (`/proc/PID/fd`) at the minute's end. At the end:
//! - RSS drift at most 10%: the last minute against the first minute after
//!   the warm-up (the larger of 2 minutes and a fifth of the run);
//! - no 5xx and no request without an answer;
//! - each minute's p99 within ±20% of the median minute's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::fire::{Check, Report};
use crate::mix::{self, Mix, Phase, Sent, Weights};
use crate::scenarios::Ctx;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub minutes: u32,
    pub connections: usize,
    pub app_pid: Option<u32>,
}

/// One minute's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    pub minute: u32,
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub server_errors: u64,
    pub no_answer: u64,
    pub rss_mb: Option<f64>,
    pub sockets: Option<usize>,
}

#[derive(Debug)]
struct Tally {
    hist: Histogram<u64>,
    requests: u64,
    server_errors: u64,
    no_answer: u64,
    classes: std::collections::BTreeMap<String, usize>,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            requests: 0,
            server_errors: 0,
            no_answer: 0,
            classes: std::collections::BTreeMap::new(),
        }
    }

    fn add(&mut self, sent: &Sent) {
        let micros = u64::try_from(sent.latency.as_micros()).unwrap_or(u64::MAX);
        let _ = self.hist.record(micros.clamp(1, 120_000_000));
        self.requests += 1;
        match sent.status {
            Some(s) if s >= 500 => self.server_errors += 1,
            None => self.no_answer += 1,
            Some(_) => {}
        }
        *self.classes.entry(sent.class()).or_insert(0) += 1;
    }

    fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.value_at_quantile(q) as f64 / 1000.0
        }
    }
}

/// Minutes of warm-up before the RSS is compared.
pub fn warm_up(minutes: u32) -> u32 {
    let fifth = minutes.div_ceil(5);
    fifth.max(2).min(minutes.saturating_sub(1))
}

fn print_header() {
    println!(
        "   {:>6} {:>9} {:>8} {:>9} {:>9} {:>5} {:>9} {:>9} {:>7}",
        "minute", "requests", "/s", "p50 ms", "p99 ms", "5xx", "no answer", "RSS MB", "sockets"
    );
}

fn print_row(m: &Minute) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!(
        "   {:>6} {:>9} {:>8.0} {:>9.1} {:>9.1} {:>5} {:>9} {:>9} {:>7}",
        m.minute,
        m.requests,
        m.per_second,
        m.p50_ms,
        m.p99_ms,
        m.server_errors,
        m.no_answer,
        or_dash(m.rss_mb.map(|v| format!("{v:.1}"))),
        or_dash(m.sockets.map(|v| v.to_string())),
    );
}

/// Runs the soak; see the module header.
///
/// # Errors
/// When the setup fails.
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
pub async fn run(ctx: &Ctx, opts: &SoakOptions, quiet: bool) -> anyhow::Result<Report> {
    let weights = Weights {
        order: 35,
        invest: 25,
        issue: 10,
        charge: 5,
    };
    let mix = Mix::set_up(ctx, "soak", 20, 10_000, weights).await?;
    let minutes = opts.minutes.max(1);
    let duration = Duration::from_secs(60 * u64::from(minutes));
    let tallies: Arc<Mutex<Vec<Tally>>> =
        Arc::new(Mutex::new((0..minutes).map(|_| Tally::new()).collect()));
    let observer: mix::Observer = {
        let tallies = Arc::clone(&tallies);
        Arc::new(move |sent: &Sent| {
            let minute = usize::try_from(sent.at.as_secs() / 60).unwrap_or(usize::MAX);
            if let Ok(mut t) = tallies.lock()
                && let Some(tally) = t.get_mut(minute)
            {
                tally.add(sent);
            }
        })
    };
    let started = Instant::now();
    let keeper = tokio::spawn(Arc::clone(&mix).keep_campaigns(
        Arc::clone(&ctx.api),
        ctx.run.clone(),
        started + duration,
    ));
    // Each minute's row: memory and sockets at its end, its latencies a
    // moment later (its last requests are still being answered).
    let rows = {
        let tallies = Arc::clone(&tallies);
        let pid = opts.app_pid;
        tokio::spawn(async move {
            if !quiet {
                print_header();
            }
            let mut rows = Vec::new();
            for m in 1..=minutes {
                tokio::time::sleep_until((started + Duration::from_secs(60 * u64::from(m))).into())
                    .await;
                let (rss, sockets) = pid.map_or((None, None), mix::process_sample);
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Ok(all) = tallies.lock() else { break };
                let t = &all[m as usize - 1];
                let row = Minute {
                    minute: m,
                    requests: t.requests,
                    per_second: t.requests as f64 / 60.0,
                    p50_ms: t.ms(0.5),
                    p99_ms: t.ms(0.99),
                    server_errors: t.server_errors,
                    no_answer: t.no_answer,
                    rss_mb: rss.map(|kb| kb as f64 / 1024.0),
                    sockets,
                };
                drop(all);
                if !quiet {
                    print_row(&row);
                }
                rows.push(row);
            }
            rows
        })
    };
    eprintln!(
        "== firing soak: {} connections for {minutes} min",
        opts.connections
    );
    let phase = Phase {
        tag: "soak".to_owned(),
        connections: opts.connections,
        duration,
        shed_pause: None,
        keep: false,
    };
    let fired = mix::fire_for(&ctx.api, &mix, &ctx.run, &phase, Some(observer)).await;
    let rows = rows.await?;
    let _ = keeper.await;

    let mut all = Tally::new();
    if let Ok(t) = tallies.lock() {
        for tally in t.iter() {
            let _ = all.hist.add(&tally.hist);
            all.requests += tally.requests;
            all.server_errors += tally.server_errors;
            all.no_answer += tally.no_answer;
            for (k, v) in &tally.classes {
                *all.classes.entry(k.clone()).or_insert(0) += v;
            }
        }
    }
    let seconds = fired.elapsed.as_secs_f64();
    let mut report = Report {
        scenario: "soak".to_owned(),
        requests: usize::try_from(all.requests).unwrap_or(usize::MAX),
        connections: opts.connections,
        seconds,
        per_second: all.requests as f64 / seconds.max(1e-9),
        p50_ms: all.ms(0.5),
        p99_ms: all.ms(0.99),
        p999_ms: all.ms(0.999),
        max_ms: all.hist.max() as f64 / 1000.0,
        statuses: all.classes.clone(),
        checks: Vec::new(),
        notes: Default::default(),
        data: None,
    };

    let warm = warm_up(minutes);
    let first = rows.get(warm as usize).and_then(|r| r.rss_mb);
    let last = rows.last().and_then(|r| r.rss_mb);
    if let (Some(first), Some(last)) = (first, last) {
        let drift = (last - first) / first;
        report.checks.push(Check::that(
            "RSS drift <= 10% after the warm-up",
            drift <= 0.10,
            format!(
                "minute {} {first:.1} MB -> minute {minutes} {last:.1} MB: {:+.1}% (warm-up {warm} min)",
                warm + 1,
                100.0 * drift
            ),
        ));
    } else {
        report.notes.insert(
            "RSS drift".to_owned(),
            "not checked (needs --app-pid and more minutes than the warm-up)".to_owned(),
        );
    }
    report.checks.push(Check::that(
        "zero 5xx and every request answered",
        all.server_errors == 0 && all.no_answer == 0,
        format!(
            "{} × 5xx, {} without an answer",
            all.server_errors, all.no_answer
        ),
    ));
    let mut p99s: Vec<f64> = rows.iter().map(|r| r.p99_ms).collect();
    p99s.sort_by(f64::total_cmp);
    let median = if p99s.is_empty() {
        0.0
    } else if p99s.len() % 2 == 1 {
        p99s[p99s.len() / 2]
    } else {
        f64::midpoint(p99s[p99s.len() / 2 - 1], p99s[p99s.len() / 2])
    };
    let outside: Vec<String> = rows
        .iter()
        .filter(|r| (r.p99_ms - median).abs() > 0.2 * median)
        .map(|r| format!("minute {} {:.1} ms", r.minute, r.p99_ms))
        .collect();
    report.checks.push(Check::that(
        "each minute's p99 within ±20% of the median minute's",
        outside.is_empty(),
        if outside.is_empty() {
            format!("median {median:.1} ms; all within")
        } else {
            format!("median {median:.1} ms; outside: {}", outside.join(", "))
        },
    ));
    if let (Some(lo), Some(hi)) = (
        rows.iter().filter_map(|r| r.sockets).min(),
        rows.iter().filter_map(|r| r.sockets).max(),
    ) {
        report.notes.insert(
            "app sockets".to_owned(),
            format!("{lo}..={hi} at the minutes' ends"),
        );
    }
    report.data = Some(
        json!({ "minutes": mix::json_of(&rows), "warmUpMinutes": warm, "medianP99Ms": median }),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_is_two_minutes_or_a_fifth_of_the_run_and_leaves_a_minute() {
        assert_eq!(warm_up(5), 2);
        assert_eq!(warm_up(60), 12);
        assert_eq!(warm_up(2), 1);
        assert_eq!(warm_up(1), 0);
    }
}
