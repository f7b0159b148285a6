//! `left_join` against its definition: after every epoch, the accumulated output equals
//! `(v, right[k])` for every live left record, whatever the order in which left records and
//! right values arrive, change and leave (2 workers, random operations, proptest).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use alluvium_engine::dataflow::differential_dataflow::input::InputSession;
use alluvium_engine::left_join::left_join;
use proptest::prelude::*;

type Out = (u32, Option<u32>);

#[derive(Clone, Debug)]
enum Op {
    /// Insert left record `(k, v)`.
    AddLeft(u8, u32),
    /// Remove the left record at this index of the live ones (if any).
    RemoveLeft(usize),
    /// Set the right value of `k` (replacing any).
    SetRight(u8, u32),
    /// Remove the right value of `k` (if any).
    RemoveRight(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u32..50).prop_map(|(k, v)| Op::AddLeft(k, v)),
        (0usize..20).prop_map(Op::RemoveLeft),
        (0u8..6, 100u32..150).prop_map(|(k, w)| Op::SetRight(k, w)),
        (0u8..6).prop_map(Op::RemoveRight),
    ]
}

/// The operations as concrete input changes per epoch, and the expected output after each.
#[allow(clippy::type_complexity)]
fn plan(
    epochs: &[Vec<Op>],
) -> (
    Vec<(Vec<((u8, u32), isize)>, Vec<((u8, u32), isize)>)>,
    Vec<BTreeMap<Out, isize>>,
) {
    let mut left: Vec<(u8, u32)> = Vec::new();
    let mut right: BTreeMap<u8, u32> = BTreeMap::new();
    let mut changes = Vec::new();
    let mut expected = Vec::new();
    for ops in epochs {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for op in ops {
            match *op {
                Op::AddLeft(k, v) => {
                    left.push((k, v));
                    l.push(((k, v), 1));
                }
                Op::RemoveLeft(i) if !left.is_empty() => {
                    let rec = left.remove(i % left.len());
                    l.push((rec, -1));
                }
                Op::RemoveLeft(_) => {}
                Op::SetRight(k, w) => {
                    if let Some(old) = right.insert(k, w) {
                        r.push(((k, old), -1));
                    }
                    r.push(((k, w), 1));
                }
                Op::RemoveRight(k) => {
                    if let Some(old) = right.remove(&k) {
                        r.push(((k, old), -1));
                    }
                }
            }
        }
        changes.push((l, r));
        let mut out = BTreeMap::new();
        for (k, v) in &left {
            *out.entry((*v, right.get(k).copied())).or_insert(0) += 1;
        }
        expected.push(out);
    }
    (changes, expected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn left_join_matches_its_definition(epochs in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..8)) {
        let (changes, expected) = plan(&epochs);
        let out: Arc<Mutex<Vec<(Out, u64, isize)>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let changes = Arc::new(changes);
        timely::execute(timely::Config::process(2), move |worker| {
            let mut left_in = InputSession::<u64, (u8, u32), isize>::new();
            let mut right_in = InputSession::<u64, (u8, u32), isize>::new();
            let sink = sink.clone();
            worker.dataflow(|scope| {
                left_join(
                    left_in.to_collection(scope),
                    right_in.to_collection(scope),
                    |v: &u32, w: Option<&u32>| (*v, w.copied()),
                )
                .inspect(move |(d, t, r)| sink.lock().unwrap().push((*d, *t, *r)));
            });
            for (epoch, (l, r)) in changes.iter().enumerate() {
                if worker.index() == epoch % 2 {
                    for (rec, diff) in l {
                        left_in.update(*rec, *diff);
                    }
                    for (rec, diff) in r {
                        right_in.update(*rec, *diff);
                    }
                }
                left_in.advance_to(epoch as u64 + 1);
                right_in.advance_to(epoch as u64 + 1);
            }
        })
        .unwrap();
        let out = out.lock().unwrap();
        for (epoch, want) in expected.iter().enumerate() {
            let mut got: BTreeMap<Out, isize> = BTreeMap::new();
            for (d, t, r) in out.iter().filter(|(_, t, _)| *t <= epoch as u64) {
                let _ = t;
                *got.entry(*d).or_insert(0) += r;
            }
            got.retain(|_, n| *n != 0);
            prop_assert_eq!(&got, want, "after epoch {}", epoch);
        }
    }
}
