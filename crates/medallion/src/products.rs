//! Product rows: the Kafka message format of CSV records, and the rules of spec §3.2.
//!
//! One message per CSV data record, JSON:
//! `{"file": "products_2026-03-01.csv", "line": 7, "header": [...], "fields": [...]}`, or, for a
//! record that could not be parsed, `{"file": ..., "line": ..., "error": "...", "raw": "..."}`.
//! The header travels with every row, so the pipeline needs no state about files.

use serde::{Deserialize, Serialize};

use crate::codes::Currencies;
use crate::money::Money;
use crate::rows::{Product, Rejection};
use crate::time::{parse_product_ts, Micros};

/// A product message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductMessage {
    /// Source file name.
    pub file: String,
    /// Line of the record's start in the file (1-based; the header is line 1).
    pub line: u64,
    /// Header names as in the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<String>,
    /// Field values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Why the record could not be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The record's raw text (invalid UTF-8 replaced) when it could not be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// A valid product version with its ordering key: `(updated_at, file, line)`, the last two
/// meaning "ingested later" (files are ingested in name order).
pub type ProductVersion = ((Micros, String, u64), Product);

/// The product rules of spec §3.2, in the order they are checked.
pub const RULES: [&str; 6] = [
    "csv_parse",
    "missing_field",
    "invalid_price",
    "invalid_currency",
    "invalid_boolean",
    "invalid_timestamp",
];

/// Trims spaces and tabs only (interior newlines are kept).
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn reject(rule: &'static str, detail: impl Into<String>, key: Option<String>) -> Rejection {
    Rejection {
        rule,
        detail: detail.into(),
        record_key: key,
    }
}

/// Parses `active`: blank means true.
fn boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "y" => Some(true),
        "false" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// Validates one product message; the first failing rule wins.
pub fn validate(payload: &[u8], currencies: &Currencies) -> Result<ProductVersion, Rejection> {
    let msg: ProductMessage = serde_json::from_slice(payload)
        .map_err(|e| reject("csv_parse", format!("not a product message: {e}"), None))?;
    if let Some(e) = &msg.error {
        return Err(reject("csv_parse", e.clone(), None));
    }
    let names: Vec<String> = msg
        .header
        .iter()
        .map(|h| trim(h.trim_start_matches('\u{feff}')).to_lowercase())
        .collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .and_then(|i| msg.fields.get(i))
            .map(|v| trim(v))
    };
    let key = col("product_id")
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    if msg.fields.len() != names.len() {
        return Err(reject(
            "csv_parse",
            format!("{} fields, header has {}", msg.fields.len(), names.len()),
            key,
        ));
    }
    let mut sorted = names.clone();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(reject("csv_parse", "duplicate header names", key));
    }
    for field in [
        "product_id",
        "name",
        "category",
        "unit_price",
        "currency",
        "updated_at",
    ] {
        if col(field).is_none_or(str::is_empty) {
            return Err(reject("missing_field", format!("`{field}` is blank"), key));
        }
    }
    let text = |f: &str| col(f).unwrap_or("");
    let list_price = Money::parse_price(text("unit_price"))
        .ok_or_else(|| reject("invalid_price", "`unit_price` is not a price", key.clone()))?;
    let currency = text("currency").to_uppercase();
    if !currencies.contains(&currency) {
        return Err(reject(
            "invalid_currency",
            "`currency` is not accepted",
            key,
        ));
    }
    let active = boolean(text("active"))
        .ok_or_else(|| reject("invalid_boolean", "`active` is not a boolean", key.clone()))?;
    let updated_at = parse_product_ts(text("updated_at")).ok_or_else(|| {
        reject(
            "invalid_timestamp",
            "`updated_at` is not a timestamp",
            key.clone(),
        )
    })?;
    let opt = |f: &str| {
        col(f)
            .filter(|v| !v.is_empty())
            .map(crate::rows::Text::from)
    };
    let product = Product {
        product_id: text("product_id").into(),
        sku: opt("sku"),
        name: text("name").into(),
        category: text("category").to_lowercase().into(),
        brand: opt("brand"),
        list_price,
        currency: currency.into(),
        active,
        updated_at,
    };
    Ok(((updated_at, msg.file, msg.line), product))
}

/// A product CSV file as Kafka messages `(key, value)`: one JSON [`ProductMessage`] per
/// record (docs/spec/medallion.md, "Product message format"), keyed by the trimmed
/// `product_id` field when the record has one. What `alluvium ingest csv` and
/// `alluvium fixture load` send.
pub fn product_file_messages(file: &str, bytes: &[u8]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    for_each_product_file_message(file, bytes, |key, payload| out.push((key, payload)));
    out
}

/// As [`product_file_messages`], handing each `(key, value)` to `emit` as it is made.
pub fn for_each_product_file_message(
    file: &str,
    bytes: &[u8],
    mut emit: impl FnMut(Option<Vec<u8>>, Vec<u8>),
) {
    for_each_csv_message(file, bytes, |msg| {
        let key = msg
            .header
            .iter()
            .position(|h| {
                h.trim_start_matches('\u{feff}')
                    .trim()
                    .eq_ignore_ascii_case("product_id")
            })
            .and_then(|i| msg.fields.get(i))
            .map(|p| p.trim().as_bytes().to_vec());
        // Serialising a struct of strings cannot fail.
        let payload = serde_json::to_vec(&msg).unwrap_or_default();
        emit(key, payload)
    })
}

/// Line numbers of records, counted from the bytes: the `csv` reader's own line count lags
/// by one after a CRLF terminator (it consumes the `\n` with the next record).
#[derive(Default)]
struct LineCounter {
    counted_to: usize,
    newlines: u64,
}

impl LineCounter {
    /// The 1-based line on which the next record starts, given the reader's byte position:
    /// line breaks (and blank lines, which the reader skips) before it are passed over.
    fn line_of_next_record(&mut self, bytes: &[u8], position: u64) -> u64 {
        let mut start = usize::try_from(position)
            .unwrap_or(bytes.len())
            .min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > self.counted_to {
            self.newlines += bytes[self.counted_to..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.counted_to = start;
        }
        self.newlines + 1
    }
}

/// Turns a CSV file into product messages, one per data record (spec §1.2, §7).
pub fn csv_messages(file: &str, bytes: &[u8]) -> Vec<ProductMessage> {
    let mut out = Vec::new();
    for_each_csv_message(file, bytes, |m| out.push(m));
    out
}

/// As [`csv_messages`], handing each message to `emit` as it is parsed (memory stays at the
/// file's size, whatever its row count).
pub fn for_each_csv_message(file: &str, bytes: &[u8], mut emit: impl FnMut(ProductMessage)) {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut header: Option<Vec<String>> = None;
    let mut header_error: Option<String> = None;
    let mut record = csv::ByteRecord::new();
    let mut lines = LineCounter::default();
    loop {
        let line = lines.line_of_next_record(bytes, reader.position().byte());
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                emit(ProductMessage {
                    file: file.into(),
                    line,
                    header: Vec::new(),
                    fields: Vec::new(),
                    error: Some(format!("unparseable CSV: {e}")),
                    raw: None,
                });
                continue;
            }
        }
        let fields: Result<Vec<String>, _> = record
            .iter()
            .map(|f| std::str::from_utf8(f).map(str::to_owned))
            .collect();
        let Some(h) = &header else {
            match fields {
                Ok(h) => {
                    let mut names: Vec<String> = h.iter().map(|n| trim(n).to_lowercase()).collect();
                    names.sort();
                    if names.windows(2).any(|w| w[0] == w[1]) {
                        header_error = Some("duplicate header names".into());
                    }
                    header = Some(h);
                }
                Err(_) => {
                    header = Some(Vec::new());
                    header_error = Some("header is not UTF-8".into());
                }
            }
            continue;
        };
        let raw = || {
            record
                .iter()
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(",")
        };
        let msg = match (fields, &header_error) {
            (_, Some(e)) => ProductMessage {
                file: file.into(),
                line,
                header: Vec::new(),
                fields: Vec::new(),
                error: Some(e.clone()),
                raw: Some(raw()),
            },
            (Err(_), _) => ProductMessage {
                file: file.into(),
                line,
                header: Vec::new(),
                fields: Vec::new(),
                error: Some("row is not UTF-8".into()),
                raw: Some(raw()),
            },
            (Ok(f), _) if f.len() != h.len() => ProductMessage {
                file: file.into(),
                line,
                header: Vec::new(),
                fields: Vec::new(),
                error: Some(format!("{} fields, header has {}", f.len(), h.len())),
                raw: Some(raw()),
            },
            (Ok(f), _) => ProductMessage {
                file: file.into(),
                line,
                header: h.clone(),
                fields: f,
                error: None,
                raw: None,
            },
        };
        emit(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(csv: &str) -> Vec<&'static str> {
        csv_messages("f.csv", csv.as_bytes())
            .into_iter()
            .map(
                |m| match validate(&serde_json::to_vec(&m).unwrap(), &Currencies::default()) {
                    Ok(_) => "ok",
                    Err(r) => r.rule,
                },
            )
            .collect()
    }

    #[test]
    fn csv_corner_cases_and_rules() {
        let csv =
            "\u{feff}PRODUCT_ID,Name,category,unit_price,currency,active,updated_at,sku,brand\n\
                   P1,\"A, \"\"quoted\"\"\nname\",Toys,1.50,eur,Y,2026-02-24,,\n\
                   P2,n,c,1.5\n\
                   P3,n,c,1.555,EUR,,2026-02-24,,\n\
                   P4,n,c,1,XXX,,2026-02-24,,\n\
                   P5,n,c,1,EUR,maybe,2026-02-24,,\n\
                   P6,n,c,1,EUR,no,2026-02-24T10:00:00,,\n\
                   ,n,c,1,EUR,no,2026-02-24,,\r\n";
        assert_eq!(
            rules(csv),
            [
                "ok",
                "csv_parse",
                "invalid_price",
                "invalid_currency",
                "invalid_boolean",
                "invalid_timestamp",
                "missing_field"
            ]
        );
        let m = &csv_messages("f.csv", csv.as_bytes())[0];
        let (_, p) = validate(&serde_json::to_vec(m).unwrap(), &Currencies::default()).unwrap();
        assert_eq!(&*p.name, "A, \"quoted\"\nname");
        assert_eq!(
            (&*p.category, &*p.currency, p.active, p.sku.clone()),
            ("toys", "EUR", true, None)
        );
        assert_eq!(m.line, 2);
    }

    #[test]
    fn line_numbers_with_crlf_lf_blank_lines_and_quoted_newlines() {
        for nl in ["\n", "\r\n"] {
            let csv = format!("h1,h2{nl}a,1{nl}\"b{nl}b\",2{nl}{nl}c,3{nl}d{nl}");
            let lines: Vec<u64> = csv_messages("f.csv", csv.as_bytes())
                .iter()
                .map(|m| m.line)
                .collect();
            assert_eq!(lines, [2, 3, 6, 7], "terminator {nl:?}");
        }
    }

    #[test]
    fn duplicate_headers_fail_every_row() {
        assert_eq!(
            rules("product_id,Product_ID,name\nP1,P1,x\nP2,P2,y\n"),
            ["csv_parse", "csv_parse"]
        );
        assert!(rules("product_id,name\n").is_empty());
    }
}
