//! `gold.daily_sales` as sums carried in differential differences.
//!
//! The obvious formulation is a `reduce` per group `(order_date, category, country, currency)`
//! over the group's lines. But `reduce` recomputes a group from all of its values whenever one
//! of them changes, and a group holds every revenue line of its day: on a long history a
//! small epoch that touches a thousand groups re-reads hundreds of thousands of lines (a fifth
//! of a 1k-event epoch in perf).
//!
//! Units and revenue are sums, and sums compose with differences: a line contributes
//! `(0 orders, quantity, line_total)` as the *difference* of its group, and the group's
//! accumulated difference is its total. Orders are a count of distinct order ids, which is a
//! sum too once each `(group, order_id)` pair is made distinct (`threshold_total`): each
//! distinct pair contributes `(1, 0, 0)`. `count_total` then reports each group's
//! accumulated [`SalesTotals`] as it changes, touching only the group's few updates — the
//! cost of an epoch no longer grows with the size of a day.

use differential_dataflow::collection::VecCollection;
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use differential_dataflow::hashable::Hashable;
use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use serde::{Deserialize, Serialize};

use alluvium_engine::Epoch;

use crate::rows::{DailySales, Text};

/// A `daily_sales` group: order day, category, shipping country, currency.
pub type SalesGroup = (i32, Text, Text, Text);

/// The aggregates of a `daily_sales` group, used as a differential difference: adding two
/// adds their components, and the accumulated difference of a group is its row.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SalesTotals {
    /// Distinct orders with a line in the group.
    pub orders: i64,
    /// Units over the group's lines.
    pub units: i64,
    /// Revenue over the group's lines, in cents.
    pub revenue: i128,
}

impl IsZero for SalesTotals {
    fn is_zero(&self) -> bool {
        self.orders == 0 && self.units == 0 && self.revenue == 0
    }
}

impl Semigroup for SalesTotals {
    fn plus_equals(&mut self, rhs: &Self) {
        self.orders += rhs.orders;
        self.units += rhs.units;
        self.revenue += rhs.revenue;
    }
}

impl Monoid for SalesTotals {
    fn zero() -> Self {
        SalesTotals::default()
    }
}

impl Abelian for SalesTotals {
    fn negate(&mut self) {
        self.orders = -self.orders;
        self.units = -self.units;
        self.revenue = -self.revenue;
    }
}

impl Multiply<isize> for SalesTotals {
    type Output = SalesTotals;
    fn multiply(self, rhs: &isize) -> SalesTotals {
        let m = *rhs as i64;
        SalesTotals {
            orders: self.orders * m,
            units: self.units * m,
            revenue: self.revenue * m as i128,
        }
    }
}

/// A revenue line: its group, order id, quantity and line total (cents).
pub type SalesLine = (SalesGroup, Text, i64, i64);

/// `daily_sales` rows, maintained from the revenue lines.
pub fn daily_sales<'s>(
    lines: VecCollection<'s, Epoch, SalesLine>,
) -> VecCollection<'s, Epoch, DailySales> {
    // The pairs are keyed by their hash first: the arrangement then orders and seeks them by
    // one integer comparison instead of comparing four strings and an order id (18 % of a
    // small epoch in perf). Equal hashes still compare the pair, so the count stays exact.
    let orders = lines
        .clone()
        .map(|(group, order_id, _, _)| ((&group, &order_id).hashed(), group, order_id))
        .threshold_total(|_, count: &isize| isize::from(*count > 0))
        .explode(|(_hash, group, _order_id)| {
            Some((
                group,
                SalesTotals {
                    orders: 1,
                    ..SalesTotals::default()
                },
            ))
        });
    let sums = lines.explode(|(group, _order_id, units, revenue)| {
        Some((
            group,
            SalesTotals {
                orders: 0,
                units,
                revenue: revenue as i128,
            },
        ))
    });
    orders.concat(sums).count_total().map(
        |((order_date, category, shipping_country, currency), totals)| DailySales {
            order_date,
            category,
            shipping_country,
            currency,
            orders: totals.orders,
            units: totals.units,
            revenue: totals.revenue,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_negate_and_scale() {
        let a = SalesTotals {
            orders: 1,
            units: 3,
            revenue: 1_234,
        };
        let mut b = a.multiply(&-2);
        assert_eq!(
            b,
            SalesTotals {
                orders: -2,
                units: -6,
                revenue: -2_468
            }
        );
        b.plus_equals(&a);
        b.negate();
        assert_eq!(b, a);
        b.plus_equals(&a.multiply(&-1));
        assert!(b.is_zero());
        assert!(!a.is_zero());
    }
}
