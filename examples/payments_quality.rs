//! Data quality in a custom pipeline (no medallion crate): card payments checked by row rules
//! (a `drop` rule that quarantines, a `warn` rule with a threshold) and a collection rule
//! (`referential`: every payment's account exists), results counted per epoch, all through the
//! gate — and every sink waits for the gate, so an epoch that a rule refuses is never
//! committed.
//!
//! ```sh
//! cargo run -p alluvium-examples --example payments_quality
//! ```

use std::sync::Arc;

use alluvium_dq::{
    dq_results, gate, referential, Check, DqResult, RowRule, RowRules, RuleDef, RuleSet, Severity,
    Threshold,
};
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{
    barrier, commit_sink, execute, partitioned_source, ClusterConfig, MemoryLog, Rehydration,
    ResumePlan, RunMode, Sink, SourceOptions,
};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Concat;

/// `(payment id, account, amount in cents, currency)`.
type Payment = (u32, String, i64, String);

/// What the pipeline commits: accepted payments per account, quarantined payments, and
/// `dq.results`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
enum Row {
    Total { account: String, cents: i64 },
    Quarantined { payment: u32, rule: String },
    Dq(DqResult),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let payment = |id, account: &str, cents, currency: &str| -> Payment {
        (id, account.into(), cents, currency.into())
    };
    let payments = MemoryLog {
        topic: "payments".into(),
        partitions: vec![
            Arc::new(vec![
                payment(1, "acc-1", 1250, "EUR"),
                payment(2, "acc-2", -300, "EUR"), // negative: dropped
                payment(3, "acc-9", 990, "EUR"),  // unknown account: an orphan
            ]),
            Arc::new(vec![
                payment(4, "acc-1", 5000, "USD"),
                payment(5, "acc-2", 120, "XXX"), // odd currency: a warning
            ]),
        ],
    };
    let accounts = MemoryLog {
        topic: "accounts".into(),
        partitions: vec![Arc::new(vec!["acc-1".to_string(), "acc-2".to_string()])],
    };

    // Row rules, in order: the first failing `drop` rule quarantines the payment.
    let table: Arc<str> = Arc::from("payments");
    let rules = Arc::new(
        RowRules::new("payments")
            .with(RowRule::predicate(
                RuleDef::new("payments", "positive_amount", Severity::Drop),
                |p: &Payment| p.2 > 0,
            ))
            .with(RowRule::predicate(
                RuleDef::new("payments", "known_currency", Severity::Warn)
                    .with_threshold(Threshold::ratio(0.5)),
                |p: &Payment| ["EUR", "USD"].contains(&p.3.as_str()),
            )),
    );
    let mut rule_set = RuleSet::default();
    for r in rules.rules() {
        rule_set.add(r.def.clone());
    }
    let rule_set = Arc::new(rule_set);
    let known_account = RuleDef::new("payments", "known_account", Severity::Warn);

    let dir = std::env::temp_dir().join(format!("alluvium-payments-{}", std::process::id()));
    let sink = FileSink::<Row>::new(&dir);
    let plan = ResumePlan::from_checkpoints([sink.checkpoint()?], Rehydration::FromStart)?;
    let options = SourceOptions {
        mode: RunMode::UntilIdle { idle_timeout: None },
        ..SourceOptions::default()
    };
    let out = sink.clone();
    execute(&ClusterConfig::single(2), move |worker, ctx| {
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let (payments, pay_positions) = partitioned_source(
                scope,
                "payments",
                ctx,
                &options,
                &plan,
                Some(probe.clone()),
                |src| Ok(payments.reader(src.worker.index, src.worker.peers, &plan)),
            );
            let (accounts, acc_positions) = partitioned_source(
                scope,
                "accounts",
                ctx,
                &options,
                &plan,
                Some(probe.clone()),
                |src| Ok(accounts.reader(src.worker.index, src.worker.peers, &plan)),
            );
            // Check each payment once: keep it, or quarantine it under the failed rule.
            let (rules, table) = (rules.clone(), table.clone());
            let checked = payments.flat_map(move |p: Payment| {
                let verdict = rules.check(&p);
                let mut out: Vec<Result<Payment, (u32, String)>> = Vec::new();
                let mut checks = vec![Check::row(&table)];
                for &i in &verdict.failed {
                    let name: Arc<str> = Arc::from(rules.rules()[i].def.name.as_str());
                    checks.push(Check::failure(&table, &name));
                }
                match verdict.dropped_by {
                    Some(i) => {
                        let name = rules.rules()[i].def.name.clone();
                        checks.push(Check::failure(&table, &Arc::from(name.as_str())));
                        out.push(Err((p.0, name)));
                    }
                    None => out.push(Ok(p)),
                }
                out.into_iter().map(Ok).chain(checks.into_iter().map(Err))
            });
            let kept = checked.clone().flat_map(|r| r.ok().and_then(Result::ok));
            let quarantined = checked.clone().flat_map(|r| r.ok().and_then(Result::err));
            let checks = checked.flat_map(Result::err);

            let (orphans, _) = referential(
                kept.clone().map(|p| (p.1, p.0)),
                accounts,
                known_account.clone(),
            );
            let results = gate(dq_results(checks, rule_set.clone()).concat(orphans), ctx);

            let totals = kept
                .map(|p| (p.1, p.2))
                .explode(|(account, cents)| Some((account, cents as isize)))
                .count()
                .map(|(account, cents)| Row::Total {
                    account,
                    cents: cents as i64,
                });
            let rows = totals
                .concat(quarantined.map(|(payment, rule)| Row::Quarantined { payment, rule }))
                .concat(results.clone().map(Row::Dq));
            let positions = pay_positions.concat(acc_positions);
            // No epoch commits before the gate has judged it.
            let positions = barrier::after(positions, results.inner);
            commit_sink(rows, positions, &out, &plan, ctx, &probe).map_err(|e| e.to_string())
        })
    })?;

    let state = sink.read_state()?.ok_or("nothing committed")?;
    println!("committed epoch {} to {}", state.epoch, dir.display());
    for (row, _) in state.rows {
        match row {
            Row::Total { account, cents } => println!("total    {account}: {cents} cents"),
            Row::Quarantined { payment, rule } => println!("quarantined payment {payment}: {rule}"),
            Row::Dq(r) => println!(
                "dq       {r} -> {}",
                if r.passed { "passed" } else { "NOT passed" }
            ),
        }
    }
    Ok(())
}
