//! `alluvium`: the command-line front of the Alluvium engine.
//!
//! A thin binary over the library crates: argument parsing, logging, and wiring.

mod cluster;
mod demo;
mod dq;
mod fixture;
mod ingest;
mod keyed_stats;
mod lake;
mod metrics_http;
mod private_pg;
mod produce;
mod progress;
mod replay;
mod run;

use anyhow::Result;

/// Differential arrangements allocate and free many small rows; glibc's allocator spent more
/// time consolidating its free lists than the dataflow spent computing (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

/// Streaming lakehouse pipelines on timely/differential dataflow.
#[derive(Debug, Parser)]
#[command(name = "alluvium", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The medallion pipeline end to end on embedded defaults: generated data through the REST
    /// and CSV ingest into an embedded Kafka-protocol broker, the pipeline into a local Iceberg
    /// lake (and a private PostgreSQL warehouse when PostgreSQL is installed), a summary.
    Demo(demo::DemoArgs),
    /// Run the engine's demo graph (count and sum per key) from a Kafka topic into a durable
    /// file table, exactly once.
    KeyedStats(keyed_stats::KeyedStatsArgs),
    /// Produce generated keyed messages (`key` -> integer value) to a topic.
    Produce(produce::ProduceArgs),
    /// Run the e-commerce medallion pipeline (Kafka -> silver and gold tables).
    Run(Box<run::RunArgs>),
    /// Backfill: rebuild every table from the topics' whole history through the same graph
    /// (`run --batch`), with a progress bar (rate, ETA) on a terminal, log lines otherwise.
    Backfill(Box<run::RunArgs>),
    /// Replay: rebuild every table from a lake's bronze tables (original offsets kept) into
    /// another lake, through the same graph, with a progress bar.
    Replay(Box<replay::ReplayArgs>),
    /// Test cases: `alluvium fixture load DIR` produces a case folder into the topics.
    #[command(subcommand)]
    Fixture(fixture::FixtureCommand),
    /// Bring data into Kafka: `alluvium ingest api` serves the REST orders API.
    #[command(subcommand)]
    Ingest(ingest::IngestCommand),
    /// Compact small files and expire old snapshots of the lake's tables.
    Maintain(Box<lake::MaintainArgs>),
    /// The Iceberg lake: `alluvium lake export --lake DIR --out DIR`.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Data quality: `alluvium dq report` prints the latest `dq.results`; `alluvium dq rules`
    /// checks a rules file and lists the rules in effect.
    #[command(subcommand)]
    Dq(dq::DqCommand),
}

/// mimalloc's `mi_option_purge_delay` (enum index 15 in the bundled mimalloc v3 header).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the OS 10 ms later: differential's
/// batches are freed and reallocated all the time, and faulting fresh zeroed pages back in
/// cost ~16 % of the pipeline's time (perf: `clear_page_erms`). RSS then stays at its peak.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the global allocator; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

fn main() {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,sqlx=warn,tokio_postgres=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panicking worker thread would leave its peers waiting forever: end the process.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("timely communication error") {
            // A peer process stopped without a clean shutdown: it failed (and kept its
            // epochs from completing) or was killed. Its log says why.
            eprintln!(
                "error: the connection to a peer process of the cluster broke — the peer failed \
                 or was killed (see its log); stopping this process too ({message})"
            );
            std::process::exit(1);
        }
        default_hook(info);
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::KeyedStats(args) => keyed_stats::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Run(args) => run::run(*args),
        Command::Backfill(mut args) => {
            args.batch = true;
            run::run(*args)
        }
        Command::Replay(args) => replay::run(*args),
        Command::Fixture(cmd) => fixture::run(cmd),
        Command::Lake(cmd) => lake::run(cmd),
        Command::Dq(cmd) => dq::run(cmd),
        Command::Ingest(cmd) => ingest::run(cmd),
        Command::Maintain(args) => lake::maintain(*args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
