//! Exact money: `decimal(18,2)` as integer cents. No float ever touches a price.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in cents (`decimal(18,2)`); aggregates use `i128` cents (`decimal(38,2)`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Money(pub i64);

/// The exclusive upper bound of a unit price: 1e9.
const MAX_PRICE_CENTS: i64 = 100_000_000_000;

impl Money {
    /// Parses a price token per spec §7: `^[0-9]+(\.[0-9]{1,2})?$`, below 1e9.
    pub fn parse_price(text: &str) -> Option<Money> {
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if text.contains('.')
            && (frac.is_empty() || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let int = int.trim_start_matches('0');
        if int.len() > 9 {
            return None;
        }
        let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut cents = whole * 100;
        match frac.len() {
            1 => cents += frac.parse::<i64>().ok()? * 10,
            2 => cents += frac.parse::<i64>().ok()?,
            _ => {}
        }
        (cents < MAX_PRICE_CENTS).then_some(Money(cents))
    }

    /// `quantity × self`.
    pub fn times(self, quantity: i64) -> Money {
        Money(self.0 * quantity)
    }
}

/// Formats cents as a decimal with two places.
pub fn format_cents(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cents(self.0 as i128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_the_spec_grammar() {
        assert_eq!(Money::parse_price("19.99"), Some(Money(1999)));
        assert_eq!(Money::parse_price("19.9"), Some(Money(1990)));
        assert_eq!(Money::parse_price("23400"), Some(Money(2_340_000)));
        assert_eq!(Money::parse_price("0"), Some(Money(0)));
        assert_eq!(
            Money::parse_price("999999999.99"),
            Some(Money(99_999_999_999))
        );
        for bad in [
            "1000000000",
            "1e3",
            "-1",
            "+1",
            "1.",
            ".5",
            "1.999",
            "1,00",
            "$1",
            "",
            " 1",
            "0x1",
        ] {
            assert_eq!(Money::parse_price(bad), None, "{bad}");
        }
        assert_eq!(Money(1999).to_string(), "19.99");
        assert_eq!(format_cents(-5), "-0.05");
    }
}
