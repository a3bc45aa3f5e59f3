//! `app`: serve the API (the default), or run one maintenance command.

use std::process::ExitCode;

use app::{Application, Config, shutdown_signal, telemetry};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "app",
    version,
    about = "Points, orders, coupons and investments service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGINT or SIGTERM (the default).
    Serve,
    /// Create the database if needed, apply pending migrations, and exit.
    Migrate,
    /// Work with the order event stream.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Work with coupon campaigns.
    Coupons {
        #[command(subcommand)]
        command: CouponsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CouponsCommand {
    /// Import codes from a CSV file (header `code`, one code per line) into a
    /// campaign; prints the summary as JSON.
    Import {
        /// The campaign's id.
        #[arg(long)]
        campaign: i64,
        /// The CSV file.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print order events as they arrive, one JSON line each, until Ctrl-C.
    Tail {
        /// Start with the events the sink still keeps.
        #[arg(long)]
        from_start: bool,
        /// Where to read: the Redis stream, or the Kafka topic
        /// (`APP_KAFKA_BROKERS`).
        #[arg(long, value_enum, default_value_t = TailSink::Stream)]
        sink: TailSink,
    },
}

/// The sinks `events tail` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TailSink {
    Stream,
    Kafka,
}

impl From<TailSink> for domain::events::Sink {
    fn from(sink: TailSink) -> Self {
        match sink {
            TailSink::Stream => Self::Stream,
            TailSink::Kafka => Self::Kafka,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                Application::build(config)
                    .await?
                    .run_until_stopped(shutdown_signal())
                    .await
            }
            Command::Migrate => app::migrate(&config).await,
            Command::Coupons {
                command: CouponsCommand::Import { campaign, file },
            } => app::coupons_import(&config, campaign, &file, &mut std::io::stdout()).await,
            Command::Events {
                command: EventsCommand::Tail { from_start, sink },
            } => {
                app::events_tail(
                    &config,
                    sink.into(),
                    from_start,
                    &mut std::io::stdout(),
                    shutdown_signal(),
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "exiting on error");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
