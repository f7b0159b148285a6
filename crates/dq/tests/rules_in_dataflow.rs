//! The rules as dataflow operators, on two workers: per-epoch results of row checks and of
//! every collection rule, maintained incrementally across epochs, and the gate failing the
//! run on a stopping result.

use std::sync::{Arc, Mutex};

use alluvium_dq::{
    dq_results, gate, reconcile, referential, unique, volume, Check, DqResult, RuleDef, RuleSet,
    Severity, Threshold,
};
use alluvium_engine::{Epoch, WorkerContext};
use differential_dataflow::input::InputSession;

type Results = Arc<Mutex<Vec<DqResult>>>;

/// `(epoch, table, rule, checked, failed, passed, stops)` of every result, sorted.
fn summary(results: &Results) -> Vec<(Epoch, String, String, i64, i64, bool, bool)> {
    let mut out: Vec<_> = results
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.epoch,
                r.table_name.clone(),
                r.rule.clone(),
                r.checked,
                r.failed,
                r.passed,
                r.stops,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn collection_rules_follow_the_live_collections() {
    let results: Results = Arc::new(Mutex::new(Vec::new()));
    let failures: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(Vec::new()));
    let (r, f) = (results.clone(), failures.clone());
    timely::execute(timely::Config::process(2), move |worker| {
        let ctx = WorkerContext::new(worker.index(), worker.peers());
        let mut orders = InputSession::<Epoch, (i64, String), isize>::new();
        let mut customers = InputSession::<Epoch, i64, isize>::new();
        let mut keys = InputSession::<Epoch, String, isize>::new();
        let mut left = InputSession::<Epoch, i64, isize>::new();
        let mut right = InputSession::<Epoch, i64, isize>::new();
        let probe = worker.dataflow(|scope| {
            let (orphans, _) = referential(
                orders.to_collection(scope),
                customers.to_collection(scope),
                RuleDef::new("facts", "orphan_orders", Severity::Warn)
                    .with_threshold(Threshold::ratio(0.4)),
            );
            let unique = unique(
                keys.to_collection(scope),
                RuleDef::new("keys", "unique_key", Severity::Warn),
            );
            let arrivals = volume(
                keys.to_collection(scope),
                RuleDef::new("keys", "volume", Severity::Warn),
                Some(2),
                Some(3),
            );
            let sums = reconcile(
                left.to_collection(scope),
                right.to_collection(scope),
                RuleDef::new("sales", "reconciles", Severity::Fail),
            );
            let all = gate(orphans.concat(unique).concat(arrivals).concat(sums), &ctx);
            let r = r.clone();
            all.inspect(move |(result, _, diff)| {
                assert_eq!(*diff, 1);
                r.lock().unwrap().push(result.clone());
            })
            .probe()
            .0
        });
        if worker.index() == 0 {
            // Epoch 0: order 3's customer is missing; key b twice; sums agree.
            orders.insert((10, "o1".to_string()));
            orders.insert((20, "o2".to_string()));
            orders.insert((30, "o3".to_string()));
            customers.insert(10);
            customers.insert(20);
            for k in ["a", "b", "b"] {
                keys.insert(k.to_string());
            }
            left.insert(100);
            right.insert(60);
            right.insert(40);
        }
        for input_epoch in 1..=2u64 {
            orders.advance_to(input_epoch);
            customers.advance_to(input_epoch);
            keys.advance_to(input_epoch);
            left.advance_to(input_epoch);
            right.advance_to(input_epoch);
            orders.flush();
            customers.flush();
            keys.flush();
            left.flush();
            right.flush();
            while probe.less_than(&input_epoch) {
                worker.step();
            }
            if worker.index() == 0 && input_epoch == 1 {
                // Epoch 1: customer 30 arrives, 10 leaves; a b is removed (one row arrives
                // and one leaves: 1 arrival, below the volume's minimum); sums differ.
                customers.insert(30);
                customers.remove(10);
                keys.remove("b".to_string());
                keys.insert("c".to_string());
                right.insert(5);
            }
        }
        drop((orders, customers, keys, left, right));
        while worker.step() {}
        f.lock().unwrap().push(ctx.failure());
    })
    .unwrap();

    let mut expected = vec![
        (0, "facts".into(), "orphan_orders".into(), 3, 1, true, false),
        (0, "keys".into(), "unique_key".into(), 3, 2, false, false),
        (0, "keys".into(), "volume".into(), 3, 0, true, false),
        (0, "sales".into(), "reconciles".into(), 1, 0, true, false),
        // Order o1's customer left: still one orphan of three (within 40 %).
        (1, "facts".into(), "orphan_orders".into(), 3, 1, true, false),
        (1, "keys".into(), "unique_key".into(), 3, 0, true, false),
        (1, "keys".into(), "volume".into(), 1, 1, false, false),
        (1, "sales".into(), "reconciles".into(), 1, 1, false, true),
    ];
    expected.sort();
    assert_eq!(summary(&results), expected);
    let failures = failures.lock().unwrap();
    let message = failures
        .iter()
        .flatten()
        .next()
        .expect("the gate failed the run");
    assert!(
        message.contains("reconciles")
            && message.contains("`sales`")
            && message.contains("epoch 1")
            && message.contains("1 of 1 rows failed"),
        "{message}"
    );
}

#[test]
fn row_checks_add_up_per_epoch_with_thresholds() {
    let results: Results = Arc::new(Mutex::new(Vec::new()));
    let r = results.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let ctx = WorkerContext::new(worker.index(), worker.peers());
        let mut checks = InputSession::<Epoch, Check, isize>::new();
        let rules = Arc::new(
            RuleSet::default()
                .rule("orders", "bad_price", Severity::Drop, Threshold::NONE)
                .rule("orders", "odd", Severity::Warn, Threshold::rows(1))
                .rule("products", "bad_name", Severity::Drop, Threshold::NONE),
        );
        let r = r.clone();
        worker.dataflow(|scope| {
            gate(dq_results(checks.to_collection(scope), rules), &ctx)
                .inspect(move |(result, _, _)| r.lock().unwrap().push(result.clone()));
        });
        let orders: Arc<str> = Arc::from("orders");
        let products: Arc<str> = Arc::from("products");
        let (bad_price, odd): (Arc<str>, Arc<str>) = (Arc::from("bad_price"), Arc::from("odd"));
        // Each worker checks 5 orders in epoch 0: 2 odd ones and 1 bad price per worker.
        for i in 0..5 {
            checks.insert(Check::row(&orders));
            if i < 2 {
                checks.insert(Check::failure(&orders, &odd));
            }
            if i == 0 {
                checks.insert(Check::failure(&orders, &bad_price));
            }
        }
        checks.advance_to(1);
        // Epoch 1: one product per worker, nothing fails; no orders.
        checks.insert(Check::row(&products));
        checks.advance_to(2);
    })
    .unwrap();
    let mut expected = vec![
        (0, "orders".into(), "bad_price".into(), 10, 2, false, false),
        // 4 odd orders past a threshold of 1 row: a warn rule that escalates.
        (0, "orders".into(), "odd".into(), 10, 4, false, true),
        (1, "products".into(), "bad_name".into(), 2, 0, true, false),
    ];
    expected.sort();
    assert_eq!(summary(&results), expected);
}

#[test]
fn reconciling_huge_sums_never_overflows() {
    let results: Results = Arc::new(Mutex::new(Vec::new()));
    let r = results.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let mut left = InputSession::<Epoch, i64, isize>::new();
        let mut right = InputSession::<Epoch, i64, isize>::new();
        let r = r.clone();
        worker.dataflow(|scope| {
            reconcile(
                left.to_collection(scope),
                right.to_collection(scope),
                RuleDef::new("sales", "reconciles", Severity::Fail),
            )
            .inspect(move |(result, _, _)| r.lock().unwrap().push(result.clone()));
        });
        // Each worker adds two values near i64::MAX to each side: the sums overflow i64.
        for _ in 0..2 {
            left.insert(i64::MAX - 1);
            right.insert(i64::MAX - 1);
        }
        left.advance_to(1);
        right.advance_to(1);
        // Epoch 1: the sides differ by one.
        if worker.index() == 0 {
            right.insert(1);
        }
    })
    .unwrap();
    let mut expected = vec![
        (0, "sales".into(), "reconciles".into(), 1, 0, true, false),
        (1, "sales".into(), "reconciles".into(), 1, 1, false, true),
    ];
    expected.sort();
    assert_eq!(summary(&results), expected);
}

#[test]
fn live_predicate_follows_insertions_and_retractions() {
    let results: Results = Arc::new(Mutex::new(Vec::new()));
    let r = results.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let mut rows = InputSession::<Epoch, i64, isize>::new();
        let r = r.clone();
        worker.dataflow(|scope| {
            alluvium_dq::live_predicate(
                rows.to_collection(scope),
                RuleDef::new("facts", "positive", Severity::Warn),
                |v: &i64| *v > 0,
            )
            .inspect(move |(result, _, _)| r.lock().unwrap().push(result.clone()));
        });
        if worker.index() == 0 {
            rows.insert(1);
            rows.insert(-1);
            rows.insert(-2);
        }
        rows.advance_to(1);
        if worker.index() == 1 {
            // A failing row leaves, a passing one arrives: 3 live rows, 1 failing.
            rows.remove(-2);
            rows.insert(5);
        }
    })
    .unwrap();
    let mut expected = vec![
        (0, "facts".into(), "positive".into(), 3, 2, false, false),
        (1, "facts".into(), "positive".into(), 3, 1, false, false),
    ];
    expected.sort();
    assert_eq!(summary(&results), expected);
}
