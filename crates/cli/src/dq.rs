//! `alluvium dq …`: the data-quality results of a lake, and checking a rules file.

use std::path::PathBuf;

use alluvium_connectors::lake::read::scan_table_blocking;
use alluvium_connectors::lake::Value;
use alluvium_dq::{DqConfig, DqResult, Severity};
use alluvium_medallion::quality::MedallionRules;
use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::lake::LakeArgs;

/// `alluvium dq …`
#[derive(Debug, Subcommand)]
pub enum DqCommand {
    /// Print the `dq.results` of the latest epochs of a lake.
    Report(Box<ReportArgs>),
    /// Check a rules file against the pipeline's tables and list every rule in effect.
    Rules {
        /// The rules file (TOML); without it, the built-in rules.
        #[arg(long = "dq-config", env = "ALLUVIUM_DQ_CONFIG")]
        dq_config: Option<PathBuf>,
    },
}

/// Output formats of `alluvium dq report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// A JSON array of result objects.
    Json,
}

/// Arguments of `alluvium dq report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// How many of the latest epochs with results to show.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Only results that did not pass.
    #[arg(long)]
    failing: bool,
    /// `table` or `json`.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Entry point of `alluvium dq`.
pub fn run(cmd: DqCommand) -> Result<()> {
    match cmd {
        DqCommand::Report(args) => report(*args),
        DqCommand::Rules { dq_config } => {
            let config = match &dq_config {
                Some(path) => DqConfig::load(path)?,
                None => DqConfig::default(),
            };
            let rules = MedallionRules::new(&config)?;
            let mut out = vec![header(&[
                "table",
                "rule",
                "severity",
                "threshold",
                "past threshold",
            ])];
            for def in rules.all() {
                let threshold = match (
                    def.threshold.max_failed_rows,
                    def.threshold.max_failed_ratio,
                ) {
                    (None, None) => "-".to_string(),
                    (rows, ratio) => [
                        rows.map(|r| format!("{r} rows")),
                        ratio.map(|r| format!("{}%", r * 100.0)),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                };
                out.push(vec![
                    def.table.clone(),
                    def.name.clone(),
                    def.severity.to_string(),
                    threshold,
                    past_threshold(def),
                ]);
            }
            print!("{}", render(&out));
            Ok(())
        }
    }
}

/// What a rule does past its threshold: `stop` the pipeline, `report` (passed = false), or
/// `-` without a threshold.
fn past_threshold(def: &alluvium_dq::RuleDef) -> String {
    match (def.threshold.is_set(), def.escalate) {
        (false, _) => "-",
        (true, true) => "stop",
        (true, false) => "report",
    }
    .into()
}

fn header(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Pads each column to its widest cell.
fn render(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Reads `dq.results` of the lake into results.
fn read_results(args: &ReportArgs) -> Result<Vec<DqResult>> {
    let config = args
        .lake
        .config()?
        .context("invalid configuration: `--lake` or `--lake-warehouse` is required")?;
    let def = alluvium_medallion::lake::table_defs()
        .into_iter()
        .find(|d| d.namespace == "dq" && d.name == "results")
        .context("the pipeline has no dq.results table")?;
    let rows = scan_table_blocking(&config, &def).context("reading dq.results")?;
    rows.into_iter()
        .map(|row| {
            let long = |i: usize| match row.get(i) {
                Some(Value::Long(v)) => Some(*v),
                _ => None,
            };
            let string = |i: usize| match row.get(i) {
                Some(Value::String(s)) => s.to_string(),
                _ => String::new(),
            };
            let severity = match string(3).as_str() {
                "warn" => Severity::Warn,
                "drop" => Severity::Drop,
                "fail" => Severity::Fail,
                other => anyhow::bail!("dq.results holds an unknown severity `{other}`"),
            };
            Ok(DqResult {
                epoch: long(0).unwrap_or_default() as u64,
                table_name: string(1),
                rule: string(2),
                severity,
                checked: long(4).unwrap_or_default(),
                failed: long(5).unwrap_or_default(),
                threshold: long(6),
                passed: matches!(row.get(7), Some(Value::Bool(true))),
                stops: false,
                evaluated_at: long(8).unwrap_or_default(),
            })
        })
        .collect()
}

/// The results of the latest `epochs` epochs (newest first), optionally only failing ones.
pub fn latest(mut results: Vec<DqResult>, epochs: usize, failing: bool) -> Vec<DqResult> {
    let mut all_epochs: Vec<u64> = results.iter().map(|r| r.epoch).collect();
    all_epochs.sort_unstable();
    all_epochs.dedup();
    let keep: Vec<u64> = all_epochs.into_iter().rev().take(epochs).collect();
    results.retain(|r| keep.contains(&r.epoch) && (!failing || !r.passed));
    results.sort_by(|a, b| {
        b.epoch
            .cmp(&a.epoch)
            .then_with(|| a.table_name.cmp(&b.table_name))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    results
}

fn report(args: ReportArgs) -> Result<()> {
    let results = latest(read_results(&args)?, args.epochs, args.failing);
    match args.format {
        Format::Json => {
            let json: Vec<serde_json::Value> = results
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "epoch": r.epoch,
                        "table_name": r.table_name,
                        "rule": r.rule,
                        "severity": r.severity.as_str(),
                        "checked": r.checked,
                        "failed": r.failed,
                        "threshold": r.threshold,
                        "passed": r.passed,
                        "evaluated_at": alluvium_medallion::time::format_ts(r.evaluated_at),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Format::Table => {
            if results.is_empty() {
                println!(
                    "no data-quality results{}",
                    if args.failing { " that failed" } else { "" }
                );
                return Ok(());
            }
            let mut rows = vec![header(&[
                "epoch",
                "table",
                "rule",
                "severity",
                "checked",
                "failed",
                "threshold",
                "passed",
            ])];
            for r in &results {
                rows.push(vec![
                    r.epoch.to_string(),
                    r.table_name.clone(),
                    r.rule.clone(),
                    r.severity.to_string(),
                    r.checked.to_string(),
                    r.failed.to_string(),
                    r.threshold.map_or("-".into(), |t| t.to_string()),
                    if r.passed { "yes" } else { "NO" }.into(),
                ]);
            }
            print!("{}", render(&rows));
            let failing = results.iter().filter(|r| !r.passed).count();
            println!(
                "{} results in {} epochs, {failing} not passed",
                results.len(),
                {
                    let mut e: Vec<u64> = results.iter().map(|r| r.epoch).collect();
                    e.dedup();
                    e.len()
                }
            );
        }
    }
    Ok(())
}
