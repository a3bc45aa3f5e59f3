//! `loadtest`: load scenarios against a running service, each checked
//! against its invariants. See `docs/performance.md` for how to run it.
//!
//! The service must run with `APP_TRUSTED_USER_HEADER=X-USER-ID` (users are
//! provisioned through the gateway header, so 20,000 users cost no password
//! hashing) and with an admin (`APP_ADMIN_LOGIN_ID`, `APP_ADMIN_PASSWORD`).

// Printing the reports is what this binary is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod api;
mod fault;
mod fire;
mod mix;
mod overload;
mod scenarios;
mod soak;
mod targets;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};

use crate::fire::Report;
use crate::scenarios::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Health,
    FlashSale,
    CouponRush,
    InvestRush,
    Orders,
    Catalog,
    /// The catalogue's reads (products, popular, a campaign's counts)
    /// spread over every `--base`, for the shared read cache; not part of
    /// `all`.
    Reads,
    #[value(name = "burst-100")]
    Burst100,
    All,
    /// A steady mixed load (orders, coupon issues, investments) for
    /// `--duration`, tolerating failures, for the fault runner
    /// (`tests/faults/run.sh`); not part of `all`.
    Fault,
    /// Orders and investments at 4x the standard concurrency (1,024
    /// connections, `--duration` 60 s), after an unloaded run at 256 for
    /// `--baseline-duration`; checks load shedding and recovery. Not part
    /// of `all`.
    Overload,
    /// A mixed load at about half capacity (128 connections) for
    /// `--minutes`, one row a minute (RSS, sockets, p99, 5xx). Not part of
    /// `all`.
    Soak,
}

#[derive(Debug, Parser)]
#[command(about = "Load scenarios against a running service, with invariant checks")]
struct Args {
    scenario: Scenario,
    /// The service's base URL; several, separated by commas, are each sent
    /// a share of the requests at random (instances of one deployment).
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "LOADTEST_BASE")]
    base: String,
    /// Requests in flight at once (keep-alive connections); 256, but 1,024
    /// for `overload` and 128 for `soak`.
    #[arg(long)]
    connections: Option<usize>,
    #[arg(long, default_value = "admin", env = "LOADTEST_ADMIN_LOGIN")]
    admin_login: String,
    #[arg(long, default_value = "change-me-now", env = "LOADTEST_ADMIN_PASSWORD")]
    admin_password: String,
    /// The trusted-gateway header the service was started with.
    #[arg(long, default_value = "X-USER-ID")]
    user_header: String,
    /// The gateway's shared secret (the service's
    /// `APP_TRUSTED_GATEWAY_SECRET`), sent as `X-Gateway-Secret` with every
    /// gateway request.
    #[arg(long, env = "LOADTEST_GATEWAY_SECRET", hide_env_values = true)]
    gateway_secret: String,
    /// Scales every request count (0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Print one JSON array of reports instead of text.
    #[arg(long)]
    json: bool,
    /// The service's process id: its peak resident memory is reported.
    #[arg(long)]
    app_pid: Option<u32>,
    /// Run the database and Redis ceilings (`scripts/baselines.sh`) after
    /// the scenarios; on by default for `all`.
    #[arg(long)]
    baselines: bool,
    /// Skip the ceilings, even for `all`.
    #[arg(long, conflicts_with = "baselines")]
    no_baselines: bool,
    /// The baselines script.
    #[arg(long, default_value_os_t = targets::default_script())]
    baselines_script: std::path::PathBuf,
    /// The client timeout of every request, in seconds: 30, but 10 for
    /// `overload` and `soak`.
    #[arg(long)]
    request_timeout: Option<f64>,
    /// fault: the fault's name in the report.
    #[arg(long, default_value = "fault")]
    fault_name: String,
    /// fault, overload: how long to fire, in seconds (fault 30, overload 60).
    #[arg(long)]
    duration: Option<f64>,
    /// overload: how long the unloaded run at 256 connections fires first,
    /// in seconds.
    #[arg(long, default_value_t = 15.0)]
    baseline_duration: f64,
    /// overload: how long a client waits after a 503, in ms (default: what
    /// its `Retry-After` says).
    #[arg(long)]
    shed_pause_ms: Option<u64>,
    /// soak: how long to fire, in minutes.
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    /// fault: a file written when the measured firing starts.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// fault: the runner's `NAME EPOCH_MS` lines (`fault`, `back`), read
    /// after the firing.
    #[arg(long)]
    marks: Option<std::path::PathBuf>,
    /// fault: where to write the JSON report.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// fault: the app itself goes away (refused and broken connections are
    /// expected).
    #[arg(long)]
    expect_disconnects: bool,
    /// fault: the outage must be answered with 503s.
    #[arg(long)]
    expect_503: bool,
    /// fault: the longest recovery that passes, in seconds after the return.
    #[arg(long, default_value_t = 5.0)]
    recovery_within: f64,
    /// fault: how long keys in doubt are retried after the firing, in seconds.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
    /// fault: allow stale refusals (a sold-out answer while the resource
    /// still had room) up to this many seconds after the fault (a killed
    /// instance's leases); without it, none is allowed.
    #[arg(long)]
    stale_refusals_within: Option<f64>,
    /// fault: the longest any request may wait for its answer, in seconds
    /// (the app's timeouts + 1 s); keep `--request-timeout` above it, so
    /// that a hang is measured rather than cut.
    #[arg(long)]
    max_wait: Option<f64>,
    /// fault: every request sent this many seconds after the return must be
    /// served (no 503, no transport error).
    #[arg(long)]
    clean_after: Option<f64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("loadtest: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let connections = args.connections.unwrap_or(match args.scenario {
        Scenario::Overload => 1_024,
        Scenario::Soak => 128,
        _ => 256,
    });
    let request_timeout =
        std::time::Duration::from_secs_f64(args.request_timeout.unwrap_or(match args.scenario {
            Scenario::Overload | Scenario::Soak => 10.0,
            _ => 30.0,
        }));
    let api = api::Api::connect(
        &args.base,
        connections.max(256),
        request_timeout,
        &args.admin_login,
        &args.admin_password,
        &args.user_header,
        &args.gateway_secret,
    )
    .await?;
    let run = format!("lt{:06x}", rand::random::<u32>() & 0xff_ffff);
    api.check_gateway(&format!("{run}-probe")).await?;
    let ctx = Ctx {
        api: Arc::new(api),
        connections,
        run,
        scale: args.scale,
    };
    if args.scenario == Scenario::Fault {
        let opts = fault::FaultOptions {
            name: args.fault_name.clone(),
            duration: std::time::Duration::from_secs_f64(args.duration.unwrap_or(30.0)),
            timeout: request_timeout,
            ready_file: args.ready_file.clone(),
            marks: args.marks.clone(),
            report: args.report.clone(),
            expect_disconnects: args.expect_disconnects,
            expect_503: args.expect_503,
            recovery_within: args.recovery_within,
            settle: std::time::Duration::from_secs_f64(args.settle),
            stale_refusals_within: args.stale_refusals_within,
            max_wait: args.max_wait.map(std::time::Duration::from_secs_f64),
            clean_after: args.clean_after.map(std::time::Duration::from_secs_f64),
        };
        return fault::run(&ctx, &opts).await;
    }
    if matches!(args.scenario, Scenario::Overload | Scenario::Soak) {
        let mut report = if args.scenario == Scenario::Overload {
            let opts = overload::OverloadOptions {
                connections,
                duration: std::time::Duration::from_secs_f64(args.duration.unwrap_or(60.0)),
                baseline_duration: std::time::Duration::from_secs_f64(args.baseline_duration),
                shed_pause: args.shed_pause_ms.map(std::time::Duration::from_millis),
                app_pid: args.app_pid,
                request_timeout,
            };
            overload::run(&ctx, &opts).await?
        } else {
            let opts = soak::SoakOptions {
                minutes: args.minutes,
                connections,
                app_pid: args.app_pid,
            };
            soak::run(&ctx, &opts, args.json).await?
        };
        if let Some(pid) = args.app_pid {
            report
                .notes
                .insert("app memory".to_owned(), describe_memory(memory_of(pid)));
        }
        let passed = report.passed();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            report.print();
            println!(
                "{}",
                if passed {
                    "ALL PASS"
                } else {
                    "SOME CHECKS FAILED"
                }
            );
        }
        return Ok(passed);
    }
    let order = match args.scenario {
        Scenario::All => vec![
            Scenario::Health,
            Scenario::Catalog,
            Scenario::Orders,
            Scenario::FlashSale,
            Scenario::Burst100,
            Scenario::CouponRush,
            Scenario::InvestRush,
        ],
        one => vec![one],
    };
    let mut reports: Vec<Report> = Vec::new();
    for scenario in order {
        let mut report = match scenario {
            Scenario::Health => scenarios::health(&ctx).await?,
            Scenario::FlashSale => scenarios::flash_sale(&ctx).await?,
            Scenario::CouponRush => scenarios::coupon_rush(&ctx).await?,
            Scenario::InvestRush => scenarios::invest_rush(&ctx).await?,
            Scenario::Orders => scenarios::orders(&ctx).await?,
            Scenario::Catalog => scenarios::catalog(&ctx).await?,
            Scenario::Reads => scenarios::reads(&ctx).await?,
            Scenario::Burst100 => scenarios::burst_100(&ctx).await?,
            Scenario::All | Scenario::Fault | Scenario::Overload | Scenario::Soak => {
                unreachable!("expanded or run above")
            }
        };
        if let Some(pid) = args.app_pid {
            report
                .notes
                .insert("app memory".to_owned(), describe_memory(memory_of(pid)));
        }
        if !args.json {
            report.print();
        }
        reports.push(report);
    }
    let passed = reports.iter().all(Report::passed);
    let want_baselines = !args.no_baselines && (args.baselines || args.scenario == Scenario::All);
    let baselines = if want_baselines {
        if !args.json {
            println!(
                "== running the baselines ({})",
                args.baselines_script.display()
            );
        }
        targets::run_baselines(&args.baselines_script)?
    } else {
        Default::default()
    };
    let run = targets::Run {
        reports: reports.iter().map(|r| (r.scenario.as_str(), r)).collect(),
        baselines,
        peak_rss_kb: args.app_pid.and_then(|pid| memory_of(pid).1),
    };
    let targets = run.targets();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "reports": reports,
                "baselines": run.baselines,
                "targets": targets,
                "passed": passed,
            }))?
        );
    } else {
        targets::print(&targets, &run.baselines);
        println!(
            "{}",
            if passed {
                "ALL PASS"
            } else {
                "SOME CHECKS FAILED"
            }
        );
    }
    Ok(passed)
}

/// Resident and peak resident memory of a process in kB (Linux).
fn memory_of(pid: u32) -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn describe_memory((rss, peak): (Option<u64>, Option<u64>)) -> String {
    let mb =
        |kb: Option<u64>| kb.map_or("?".to_owned(), |kb| format!("{:.1} MB", kb as f64 / 1024.0));
    format!("RSS {}, peak {}", mb(rss), mb(peak))
}
