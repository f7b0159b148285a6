//! Timestamps of the spec: RFC 3339 (and the product file forms), as UTC microseconds.
//!
//! Written out rather than delegated to a date crate because spec §7 fixes an exact grammar
//! (`T`/`t`/space, `Z`/`z`/`±HH:MM`, 0–9 fraction digits *truncated* to microseconds before
//! anything else) that general-purpose parsers either reject or round.

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

const MIN: Micros = 946_684_800_000_000; // 2000-01-01T00:00:00Z
const MAX: Micros = 4_102_444_800_000_000; // 2100-01-01T00:00:00Z

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(y, m, d)` of a day number.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<i64> {
        let s = self.b.get(self.i..self.i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(s.iter().fold(0i64, |a, d| a * 10 + (d - b'0') as i64))
    }
    fn byte(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// `YYYY-MM-DD`, validated; returns the day number.
fn date(c: &mut Cursor<'_>) -> Option<i64> {
    let y = c.digits(4)?;
    c.byte(b'-')?;
    let m = c.digits(2)?;
    c.byte(b'-')?;
    let d = c.digits(2)?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `HH:MM:SS[.f{1,9}]` → microseconds of the day (fraction truncated).
fn time_of_day(c: &mut Cursor<'_>) -> Option<i64> {
    let h = c.digits(2)?;
    c.byte(b':')?;
    let mi = c.digits(2)?;
    c.byte(b':')?;
    let s = c.digits(2)?;
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut micros = 0i64;
    if c.byte(b'.').is_some() {
        let start = c.i;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
        }
        let frac = &c.b[start..c.i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        for k in 0..6 {
            micros = micros * 10 + frac.get(k).map_or(0, |d| (d - b'0') as i64);
        }
    }
    Some(((h * 60 + mi) * 60 + s) * 1_000_000 + micros)
}

fn in_range(t: Micros) -> Option<Micros> {
    (MIN..MAX).contains(&t).then_some(t)
}

/// Parses an RFC 3339 timestamp with a zone (spec §3.1 rule 5 and §7), in range.
pub fn parse_rfc3339(text: &str) -> Option<Micros> {
    let mut c = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    let day = date(&mut c)?;
    match c.peek()? {
        b'T' | b't' | b' ' => c.i += 1,
        _ => return None,
    }
    let tod = time_of_day(&mut c)?;
    let offset = match c.peek()? {
        b'Z' | b'z' => {
            c.i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            c.i += 1;
            let oh = c.digits(2)?;
            c.byte(b':')?;
            let om = c.digits(2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 60 + om) * 60 * 1_000_000;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    if !c.done() {
        return None;
    }
    in_range(day * 86_400_000_000 + tod - offset)
}

/// Parses a product `updated_at`: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.ffffff]` or `YYYY-MM-DD`
/// read as UTC (spec §3.2).
pub fn parse_product_ts(text: &str) -> Option<Micros> {
    if let Some(t) = parse_rfc3339(text) {
        return Some(t);
    }
    let mut c = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    let day = date(&mut c)?;
    if c.done() {
        return in_range(day * 86_400_000_000);
    }
    c.byte(b' ')?;
    let tod = time_of_day(&mut c)?;
    if !c.done() {
        return None;
    }
    in_range(day * 86_400_000_000 + tod)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_ts(t: Micros) -> String {
    let day = t.div_euclid(86_400_000_000);
    let rem = t.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(day);
    let secs = rem / 1_000_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rem % 1_000_000
    )
}

/// The UTC day number of a timestamp.
pub fn day_of(t: Micros) -> i32 {
    t.div_euclid(86_400_000_000) as i32
}

/// `YYYY-MM-DD` of a day number.
pub fn format_date(day: i32) -> String {
    let (y, m, d) = civil_from_days(day as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Milliseconds since the epoch (Debezium `ts_ms`) as microseconds.
pub fn from_millis(ms: i64) -> Micros {
    ms * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms_and_truncation() {
        let t = parse_rfc3339("2026-02-28T15:49:24.785-09:30").unwrap();
        assert_eq!(format_ts(t), "2026-03-01T01:19:24.785000Z");
        assert_eq!(
            format_ts(parse_rfc3339("2026-02-28t02:11:56.95859184z").unwrap()),
            "2026-02-28T02:11:56.958591Z"
        );
        assert_eq!(
            format_ts(parse_rfc3339("2026-02-28 02:11:56+00:00").unwrap()),
            "2026-02-28T02:11:56.000000Z"
        );
        assert_eq!(
            format_ts(parse_rfc3339("2024-02-29T23:59:59.9999999Z").unwrap()),
            "2024-02-29T23:59:59.999999Z"
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-02-28T24:00:00Z",
            "2026-02-28T10:00:00",
            "2026-02-28",
            "1999-12-31T23:59:59.999999Z",
            "2100-01-01T00:00:00Z",
            "2026-02-28T10:00:00.Z",
            "2026-02-28T10:00:00.1234567890Z",
            "2026-2-28T10:00:00Z",
            "2026-02-28T10:00:00+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2000-01-01T01:00:00+01:00").is_some());
        assert!(parse_rfc3339("2000-01-01T00:59:59+01:00").is_none());
    }

    #[test]
    fn product_forms_and_dates() {
        assert_eq!(
            format_ts(parse_product_ts("2026-02-24 06:57:40.053933").unwrap()),
            "2026-02-24T06:57:40.053933Z"
        );
        assert_eq!(
            format_ts(parse_product_ts("2026-02-24").unwrap()),
            "2026-02-24T00:00:00.000000Z"
        );
        assert_eq!(parse_product_ts("2026-02-24T06:57:40"), None);
        let t = parse_rfc3339("2026-03-25T05:29:19Z").unwrap();
        assert_eq!(format_date(day_of(t)), "2026-03-25");
    }
}
