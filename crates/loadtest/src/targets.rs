//! The ceilings each scenario is compared with, and issue 15's targets.
//!
//! The framework ceiling is the `health` scenario of the same run. The
//! database and Redis ceilings come from `scripts/baselines.sh` (pgbench with
//! the SQL of one order, redis-benchmark with the gate scripts), run by this
//! tool after the scenarios, so that every figure of one run is also a ratio.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::fire::Report;

/// `scripts/baselines.sh` of this workspace.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/baselines.sh")
}

/// Runs the baselines script; returns its `BASELINE name value` figures.
///
/// # Errors
/// When the script cannot run or fails.
pub fn run_baselines(script: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse_baselines(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_baselines(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("BASELINE ")?.split_whitespace();
            let name = words.next()?.to_owned();
            let value = words.next()?.parse().ok()?;
            Some((name, value))
        })
        .collect()
}

/// One target: what was measured against what was asked.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub measured: String,
    pub target: String,
    /// The figure as a share of its ceiling, when it has one.
    pub ratio: Option<String>,
    pub met: bool,
}

/// What a run measured, keyed for the targets.
#[derive(Debug, Default)]
pub struct Run<'a> {
    pub reports: BTreeMap<&'a str, &'a Report>,
    pub baselines: BTreeMap<String, f64>,
    /// The app's peak resident memory, in kB.
    pub peak_rss_kb: Option<u64>,
}

impl Run<'_> {
    fn rate(&self, scenario: &str) -> Option<&Report> {
        self.reports.get(scenario).copied()
    }

    fn health(&self) -> Option<&Report> {
        self.rate(HEALTH)
    }

    /// `figure` as a share of the baseline `name`, with whether it reaches
    /// `at_least` (a fraction) of it; `None` without that baseline.
    fn of_baseline(&self, name: &str, figure: f64, at_least: f64) -> Option<(String, bool)> {
        let base = *self.baselines.get(name)?;
        Some((
            format!("{:.0}% of {name} {base:.0}", 100.0 * figure / base),
            figure >= at_least * base,
        ))
    }

    /// Issue 15's targets that this run has the figures for. Every target
    /// is a ratio to a ceiling measured in the same run: the framework
    /// ceiling (`health`: its rate and its p99) or a baseline.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let health = self.health();
        if let (Some(r), Some(h)) = (self.rate("flash-sale"), health) {
            let paid_exactly = r.passed();
            out.push(Target {
                name: "flash-sale attempts/s, p99, exactly the stock paid".into(),
                measured: format!(
                    "{:.0}/s, p99 {:.1} ms, invariants {}",
                    r.per_second,
                    r.p99_ms,
                    if paid_exactly { "PASS" } else { "FAILED" }
                ),
                target: ">= 40% of health, p99 <= 2x health's p99".into(),
                ratio: Some(of_health(r, h)),
                met: r.per_second >= 0.4 * h.per_second
                    && r.p99_ms <= 2.0 * h.p99_ms
                    && paid_exactly,
            });
        }
        if let (Some(r), Some(h)) = (self.rate("coupon-rush"), health) {
            out.push(Target {
                name: "coupon-rush attempts/s, exactly the pool issued".into(),
                measured: format!(
                    "{:.0}/s, p99 {:.1} ms, invariants {}",
                    r.per_second,
                    r.p99_ms,
                    if r.passed() { "PASS" } else { "FAILED" }
                ),
                target: ">= 40% of health".into(),
                ratio: Some(of_health(r, h)),
                met: r.per_second >= 0.4 * h.per_second && r.passed(),
            });
        }
        if let Some(r) = self.rate("invest-rush") {
            let errors = server_errors(r);
            let of_hot = self.of_baseline("pg_order_hot_tps", r.per_second, 5.0);
            let p99_ok = health.map(|h| r.p99_ms <= 3.0 * h.p99_ms);
            out.push(Target {
                name: "invest-rush investments/s, p99, no 5xx".into(),
                measured: format!(
                    "{:.0}/s, p99 {:.1} ms, {errors} answers 5xx",
                    r.per_second, r.p99_ms
                ),
                target: ">= 5x pg_order_hot_tps, p99 <= 3x health's p99, zero 5xx".into(),
                ratio: Some(
                    [
                        of_hot.as_ref().map(|(text, _)| text.clone()),
                        health.map(|h| p99_of_health(r, h)),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
                ),
                met: of_hot.is_some_and(|(_, met)| met) && p99_ok == Some(true) && errors == 0,
            });
        }
        if let Some(r) = self.rate("orders (uncontended)") {
            let spread = self.of_baseline("pg_order_spread_tps", r.per_second, 3.0);
            out.push(Target {
                name: "orders paid/s".into(),
                measured: format!("{:.0}/s, p99 {:.1} ms", r.per_second, r.p99_ms),
                target: ">= 300% of pg_order_spread_tps".into(),
                met: spread.as_ref().is_some_and(|(_, met)| *met),
                ratio: spread.map(|(text, _)| text),
            });
        }
        if let (Some(r), Some(h)) = (self.rate("catalog"), health) {
            out.push(Target {
                name: "catalog reads/s".into(),
                measured: format!("{:.0}/s, p99 {:.1} ms", r.per_second, r.p99_ms),
                target: ">= 80% of health".into(),
                ratio: Some(of_health(r, h)),
                met: r.per_second >= 0.8 * h.per_second,
            });
        }
        if let Some(r) = self.rate("burst-100") {
            let ms = r.seconds * 1000.0;
            let serial = self
                .baselines
                .get("pg_order_hot_tps")
                .map(|tps| 100_000.0 / tps);
            out.push(Target {
                name: "burst-100 first send to last answer".into(),
                measured: format!("{ms:.1} ms"),
                target: ">= 15x faster than 100 serial commits at pg_order_hot_tps".into(),
                ratio: serial.map(|serial| {
                    format!(
                        "{:.1}x faster than serial commits ({serial:.0} ms at pg_order_hot_tps {:.0})",
                        serial / ms,
                        100_000.0 / serial
                    )
                }),
                met: serial.is_some_and(|serial| serial >= 15.0 * ms),
            });
        }
        if let Some(kb) = self.peak_rss_kb {
            out.push(Target {
                name: "app peak RSS over the whole run".into(),
                measured: format!("{:.1} MB", kb as f64 / 1024.0),
                target: "<= 100 MB".into(),
                ratio: None,
                met: kb <= 100 * 1024,
            });
        }
        out
    }
}

/// The framework ceiling's scenario.
const HEALTH: &str = "health (framework ceiling)";

fn of_health(r: &Report, h: &Report) -> String {
    format!(
        "{:.0}% of health {:.0}/s; {}",
        100.0 * r.per_second / h.per_second,
        h.per_second,
        p99_of_health(r, h)
    )
}

fn p99_of_health(r: &Report, h: &Report) -> String {
    format!(
        "p99 {:.1}x health's {:.1} ms",
        r.p99_ms / h.p99_ms,
        h.p99_ms
    )
}

/// Answers with a 5xx status (and none lost: "no answer" counts too).
fn server_errors(r: &Report) -> usize {
    r.statuses
        .iter()
        .filter(|(status, _)| status.starts_with('5') || status.as_str() == "no answer")
        .map(|(_, n)| n)
        .sum()
}

/// Prints the targets as a block of lines.
pub fn print(targets: &[Target], baselines: &BTreeMap<String, f64>) {
    if !baselines.is_empty() {
        println!("== baselines");
        for (name, value) in baselines {
            println!("   {name}: {value:.0}");
        }
    }
    if targets.is_empty() {
        return;
    }
    println!("== targets");
    for t in targets {
        println!(
            "   [{}] {}: {} (target {}){}",
            if t.met { "met" } else { "MISSED" },
            t.name,
            t.measured,
            t.target,
            t.ratio
                .as_ref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_lines_are_read_and_other_lines_ignored() {
        let text =
            "building...\nBASELINE pg_order_hot_tps 601.5\nBASELINE broken\nBASELINE redis_x 9e4\n";

        let figures = parse_baselines(text);

        assert_eq!(figures.len(), 2);
        assert_eq!(figures["pg_order_hot_tps"], 601.5);
        assert_eq!(figures["redis_x"], 90_000.0);
    }

    fn report(scenario: &str, per_second: f64, p99_ms: f64, statuses: &[(&str, usize)]) -> Report {
        Report {
            scenario: scenario.to_owned(),
            requests: 0,
            connections: 256,
            seconds: 0.0,
            per_second,
            p50_ms: 0.0,
            p99_ms,
            p999_ms: 0.0,
            max_ms: 0.0,
            statuses: statuses
                .iter()
                .map(|(s, n)| ((*s).to_owned(), *n))
                .collect(),
            checks: Vec::new(),
            notes: BTreeMap::new(),
            data: None,
        }
    }

    fn target<'a>(targets: &'a [Target], prefix: &str) -> &'a Target {
        targets
            .iter()
            .find(|t| t.name.starts_with(prefix))
            .expect("the target is reported")
    }

    #[test]
    fn invest_rush_is_judged_against_the_hot_row_and_healths_p99_and_any_5xx_misses_it() {
        let health = report(HEALTH, 40_000.0, 20.0, &[("200", 1)]);
        let fast = report("invest-rush", 3_100.0, 59.0, &[("201", 19_000)]);
        let failing = report(
            "invest-rush",
            3_100.0,
            59.0,
            &[("201", 19_000), ("503 SERVICE_UNAVAILABLE", 1)],
        );
        let slow_tail = report("invest-rush", 3_100.0, 61.0, &[("201", 19_000)]);
        let baselines: BTreeMap<String, f64> = [("pg_order_hot_tps".to_owned(), 600.0)].into();
        let judge = |r: &Report| {
            let run = Run {
                reports: [(HEALTH, &health), ("invest-rush", r)].into(),
                baselines: baselines.clone(),
                peak_rss_kb: None,
            };
            target(&run.targets(), "invest-rush").met
        };

        assert!(judge(&fast), "5.2x the hot row, p99 2.95x health's");
        assert!(!judge(&failing), "one 503 misses it");
        assert!(!judge(&slow_tail), "p99 over 3x health's misses it");
    }

    #[test]
    fn burst_100_must_be_fifteen_times_faster_than_serial_commits() {
        let baselines: BTreeMap<String, f64> = [("pg_order_hot_tps".to_owned(), 500.0)].into();
        let mut burst = report("burst-100", 0.0, 0.0, &[("201", 100)]);
        let judge = |burst: &Report| {
            let run = Run {
                reports: [("burst-100", burst)].into(),
                baselines: baselines.clone(),
                peak_rss_kb: None,
            };
            target(&run.targets(), "burst-100").met
        };

        burst.seconds = 0.0133; // 200 ms serial / 15 = 13.3 ms
        assert!(judge(&burst));
        burst.seconds = 0.0135;
        assert!(!judge(&burst));
    }
}
