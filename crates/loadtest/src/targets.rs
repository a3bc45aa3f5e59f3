//! The ceilings each scenario is compared with, and issue 7's targets.
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

    fn ceiling(&self, name: &str, figure: f64) -> Option<String> {
        let base = self.baselines.get(name)?;
        Some(format!("{:.0}% of {name} {base:.0}", 100.0 * figure / base))
    }

    /// Issue 7's targets that this run has the figures for.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(r) = self.rate("flash-sale") {
            out.push(Target {
                name: "flash-sale attempts/s and p99".into(),
                measured: format!("{:.0}/s, p99 {:.1} ms", r.per_second, r.p99_ms),
                target: ">= 5,000/s with p99 <= 100 ms".into(),
                ratio: self.ceiling("redis_stock_reserve_per_s", r.per_second),
                met: r.per_second >= 5_000.0 && r.p99_ms <= 100.0,
            });
        }
        if let Some(r) = self.rate("coupon-rush") {
            out.push(Target {
                name: "coupon-rush attempts/s".into(),
                measured: format!("{:.0}/s, p99 {:.1} ms", r.per_second, r.p99_ms),
                target: ">= 5,000/s".into(),
                ratio: self.ceiling("redis_coupon_admit_per_s", r.per_second),
                met: r.per_second >= 5_000.0,
            });
        }
        if let Some(r) = self.rate("orders (uncontended)") {
            let base = self.baselines.get("pg_order_spread_tps").copied();
            out.push(Target {
                name: "orders paid/s".into(),
                measured: format!("{:.0}/s, p99 {:.1} ms", r.per_second, r.p99_ms),
                target: ">= 50% of the pgbench ceiling".into(),
                ratio: self.ceiling("pg_order_spread_tps", r.per_second),
                met: base.is_some_and(|b| r.per_second >= 0.5 * b),
            });
        }
        if let (Some(r), Some(h)) = (
            self.rate("catalog"),
            self.rate("health (framework ceiling)"),
        ) {
            out.push(Target {
                name: "catalog reads/s".into(),
                measured: format!("{:.0}/s, p99 {:.1} ms", r.per_second, r.p99_ms),
                target: ">= 50% of the framework ceiling".into(),
                ratio: Some(format!(
                    "{:.0}% of health {:.0}/s",
                    100.0 * r.per_second / h.per_second,
                    h.per_second
                )),
                met: r.per_second >= 0.5 * h.per_second,
            });
        }
        if let Some(r) = self.rate("burst-100") {
            let ms = r.seconds * 1000.0;
            out.push(Target {
                name: "burst-100 first send to last answer".into(),
                measured: format!("{ms:.1} ms"),
                target: "<= 35 ms".into(),
                ratio: self.baselines.get("pg_order_hot_tps").map(|tps| {
                    format!(
                        "one transaction per order would take >= {:.0} ms at pg_order_hot_tps {tps:.0}",
                        100_000.0 / tps
                    )
                }),
                met: ms <= 35.0,
            });
        }
        if let Some(kb) = self.peak_rss_kb {
            out.push(Target {
                name: "app peak RSS under load".into(),
                measured: format!("{:.1} MB", kb as f64 / 1024.0),
                target: "<= 150 MB".into(),
                ratio: None,
                met: kb <= 150 * 1024,
            });
        }
        out
    }
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
}
