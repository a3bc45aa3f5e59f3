//! Firing requests: `connections` workers pull request numbers from a shared
//! counter, so at most that many requests are in flight; each latency goes
//! into an HDR histogram (microseconds, 3 significant figures).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::api::Answer;

/// What a burst of requests did.
#[derive(Debug)]
pub struct Fired {
    /// Answer `i` of request `i` (`None`: no answer, a transport error).
    pub answers: Vec<Option<Answer>>,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// Sends requests `0..count` through `connections` workers.
pub async fn fire<F, Fut>(count: usize, connections: usize, shot: F) -> Fired
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Answer>> + Send,
{
    let shot = Arc::new(shot);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections.clamp(1, count.max(1)))
        .map(|_| {
            let (shot, next) = (Arc::clone(&shot), Arc::clone(&next));
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut answers = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let sent = Instant::now();
                    let answer = shot(i).await.ok();
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = hist.record(micros.max(1));
                    answers.push((i, answer));
                }
                (hist, answers)
            })
        })
        .collect();
    let mut all = vec![None; count];
    let mut merged = histogram();
    for worker in workers {
        let Ok((hist, answers)) = worker.await else {
            continue;
        };
        let _ = merged.add(&hist);
        for (i, answer) in answers {
            all[i] = answer;
        }
    }
    Fired {
        answers: all,
        elapsed: started.elapsed(),
        histogram: merged,
    }
}

/// Sends `count` requests at once: every request is built and waiting
/// before the first is released. The elapsed time runs from the release to
/// the last answer.
pub async fn burst<F, Fut>(count: usize, shot: F) -> Fired
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Answer>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Barrier::new(count + 1));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let gate = Arc::clone(&gate);
            let request = shot(i);
            tokio::spawn(async move {
                gate.wait().await;
                let sent = Instant::now();
                let answer = request.await.ok();
                (sent.elapsed(), answer)
            })
        })
        .collect();
    gate.wait().await;
    let started = Instant::now();
    let mut hist = histogram();
    let mut answers = Vec::with_capacity(count);
    for task in tasks {
        let (took, answer) = task.await.unwrap_or((Duration::ZERO, None));
        let _ = hist.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
        answers.push(answer);
    }
    Fired {
        answers,
        elapsed: started.elapsed(),
        histogram: hist,
    }
}

/// One checked invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    #[allow(clippy::needless_pass_by_value)] // call sites read better with values
    pub fn eq<T: PartialEq + std::fmt::Debug>(name: &str, actual: T, expected: T) -> Self {
        Self {
            name: name.to_owned(),
            pass: actual == expected,
            detail: format!("{actual:?} (expected {expected:?})"),
        }
    }

    pub fn that(name: &str, pass: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            pass,
            detail: detail.into(),
        }
    }

    pub fn ok(&self) -> bool {
        self.pass
    }
}

/// What one scenario measured and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub requests: usize,
    pub connections: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// "201", "409 OUT_OF_STOCK", "no answer", …
    pub statuses: BTreeMap<String, usize>,
    pub checks: Vec<Check>,
    /// Anything else worth printing (`elapsed_ms` of a burst, RSS, …).
    pub notes: BTreeMap<String, String>,
    /// Figures for machines (`--json`): the overload's ratios, the soak's
    /// minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Report {
    pub fn new(scenario: &str, connections: usize, fired: &Fired) -> Self {
        let ms = |q: f64| fired.histogram.value_at_quantile(q) as f64 / 1000.0;
        let mut statuses = BTreeMap::new();
        for answer in &fired.answers {
            let key = match answer {
                None => "no answer".to_owned(),
                Some(a) if a.code().is_empty() => a.status.to_string(),
                Some(a) => format!("{} {}", a.status, a.code()),
            };
            *statuses.entry(key).or_insert(0) += 1;
        }
        let seconds = fired.elapsed.as_secs_f64();
        Self {
            scenario: scenario.to_owned(),
            requests: fired.answers.len(),
            connections,
            seconds,
            per_second: fired.answers.len() as f64 / seconds.max(1e-9),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: fired.histogram.max() as f64 / 1000.0,
            statuses,
            checks: Vec::new(),
            notes: BTreeMap::new(),
            data: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// The human-readable block.
    pub fn print(&self) {
        println!(
            "== {} ({} requests, {} connections)",
            self.scenario, self.requests, self.connections
        );
        println!(
            "   {:.0}/s over {:.2} s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.per_second, self.seconds, self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("   answers: {}", statuses.join(", "));
        for (k, v) in &self.notes {
            println!("   {k}: {v}");
        }
        for c in &self.checks {
            println!(
                "   [{}] {}: {}",
                if c.pass { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
}

/// How many answers had this status.
pub fn count(fired: &Fired, status: u16) -> usize {
    fired
        .answers
        .iter()
        .filter(|a| a.as_ref().is_some_and(|a| a.status == status))
        .count()
}
