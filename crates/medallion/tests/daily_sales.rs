//! `sales::daily_sales` against its definition: after every epoch, the accumulated output is
//! one row per group with live lines — distinct orders, units and revenue over the group's
//! live lines — whatever the order in which lines arrive and leave (2 workers, random
//! operations, proptest). Lines of one order may share a group, and an order may have lines
//! in several groups: the distinct-order count must survive both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use alluvium_medallion::rows::{DailySales, Text};
use alluvium_medallion::sales::{daily_sales, SalesLine};
use differential_dataflow::input::InputSession;
use proptest::prelude::*;

/// A row as compared: group fields and aggregates.
type Row = (i32, String, String, String, i64, i64, i128);

#[derive(Clone, Debug)]
enum Op {
    /// Insert a line: day, category, order, quantity, total.
    Add(u8, u8, u8, i64, i64),
    /// Remove the live line at this index (if any).
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u8..3, 0u8..6, 1i64..5, -500i64..5_000)
            .prop_map(|(d, c, o, q, t)| Op::Add(d, c, o, q, t)),
        2 => (0usize..40).prop_map(Op::Remove),
    ]
}

fn line(day: u8, category: u8, order: u8, qty: i64, total: i64) -> SalesLine {
    (
        (
            i32::from(day),
            Text::from(format!("cat-{category}")),
            Text::from("DE"),
            Text::from("EUR"),
        ),
        Text::from(format!("ORD-{order}")),
        qty,
        total,
    )
}

fn row(d: &DailySales) -> Row {
    (
        d.order_date,
        d.category.to_string(),
        d.shipping_country.to_string(),
        d.currency.to_string(),
        d.orders,
        d.units,
        d.revenue,
    )
}

/// The input changes per epoch, and the expected table after each.
#[allow(clippy::type_complexity)]
fn plan(epochs: &[Vec<Op>]) -> (Vec<Vec<(SalesLine, isize)>>, Vec<BTreeSet<Row>>) {
    let mut live: Vec<SalesLine> = Vec::new();
    let mut changes = Vec::new();
    let mut expected = Vec::new();
    for ops in epochs {
        let mut epoch = Vec::new();
        for op in ops {
            match *op {
                Op::Add(d, c, o, q, t) => {
                    let l = line(d, c, o, q, t);
                    live.push(l.clone());
                    epoch.push((l, 1));
                }
                Op::Remove(i) if !live.is_empty() => {
                    let l = live.remove(i % live.len());
                    epoch.push((l, -1));
                }
                Op::Remove(_) => {}
            }
        }
        changes.push(epoch);
        let mut groups: BTreeMap<_, (BTreeSet<Text>, i64, i128)> = BTreeMap::new();
        for (group, order, qty, total) in &live {
            let g = groups.entry(group.clone()).or_default();
            g.0.insert(order.clone());
            g.1 += qty;
            g.2 += *total as i128;
        }
        expected.push(
            groups
                .into_iter()
                .map(|((day, cat, country, cur), (orders, units, revenue))| {
                    (
                        day,
                        cat.to_string(),
                        country.to_string(),
                        cur.to_string(),
                        orders.len() as i64,
                        units,
                        revenue,
                    )
                })
                .collect(),
        );
    }
    (changes, expected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn daily_sales_matches_its_definition(epochs in prop::collection::vec(prop::collection::vec(op(), 0..10), 1..8)) {
        let (changes, expected) = plan(&epochs);
        let out: Arc<Mutex<Vec<(Row, u64, isize)>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let changes = Arc::new(changes);
        timely::execute(timely::Config::process(2), move |worker| {
            let mut lines = InputSession::<u64, SalesLine, isize>::new();
            let sink = sink.clone();
            worker.dataflow(|scope| {
                daily_sales(lines.to_collection(scope))
                    .inspect(move |(d, t, r)| sink.lock().unwrap().push((row(d), *t, *r)));
            });
            for (epoch, changes) in changes.iter().enumerate() {
                // Alternate the worker that reads an epoch's input, so lines of one group
                // arrive at both workers.
                if worker.index() == epoch % 2 {
                    for (l, diff) in changes {
                        lines.update(l.clone(), *diff);
                    }
                }
                lines.advance_to(epoch as u64 + 1);
            }
        })
        .unwrap();
        let out = out.lock().unwrap();
        for (epoch, want) in expected.iter().enumerate() {
            let mut got: BTreeMap<Row, isize> = BTreeMap::new();
            for (d, _, r) in out.iter().filter(|(_, t, _)| *t <= epoch as u64) {
                *got.entry(d.clone()).or_insert(0) += r;
            }
            got.retain(|_, n| *n != 0);
            prop_assert!(got.values().all(|n| *n == 1), "a row twice after epoch {}: {:?}", epoch, got);
            let got: BTreeSet<Row> = got.into_keys().collect();
            prop_assert_eq!(&got, want, "after epoch {}", epoch);
        }
    }
}
