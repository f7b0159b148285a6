//! Code lists of the spec: order statuses, currencies, ISO 3166-1 alpha-2 countries.

/// Order statuses (spec §3.1 rule 4), lowercase.
pub const STATUSES: [&str; 6] = [
    "created",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];

/// The default accepted currencies (spec §3.1 rule 6).
pub const DEFAULT_CURRENCIES: [&str; 12] = [
    "USD", "EUR", "GBP", "JPY", "TWD", "CNY", "CAD", "AUD", "CHF", "SGD", "HKD", "KRW",
];

/// Officially assigned ISO 3166-1 alpha-2 codes (249), sorted for binary search.
const COUNTRIES: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// [`COUNTRIES`] as a bit per code: bit `second - b'A'` of word `first - b'A'`. Every
/// order event asks, and a binary search of 2-byte strings is eight `memcmp` calls.
const COUNTRY_BITS: [u32; 26] = {
    let mut bits = [0u32; 26];
    let mut i = 0;
    while i < COUNTRIES.len() {
        let c = COUNTRIES[i].as_bytes();
        bits[(c[0] - b'A') as usize] |= 1 << (c[1] - b'A');
        i += 1;
    }
    bits
};

/// Whether `code` (already uppercase) is an assigned ISO 3166-1 alpha-2 code.
pub fn is_country(code: &str) -> bool {
    match *code.as_bytes() {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => {
            COUNTRY_BITS[(a - b'A') as usize] >> (b - b'A') & 1 == 1
        }
        _ => false,
    }
}

/// A code of up to 7 bytes as one integer (length in the top byte), so that a list of
/// codes is searched by integer comparison; `None` for longer codes.
fn packed(code: &str) -> Option<u64> {
    let b = code.as_bytes();
    (b.len() <= 7).then(|| {
        let mut word = [0u8; 8];
        word[..b.len()].copy_from_slice(b);
        word[7] = b.len() as u8;
        u64::from_le_bytes(word)
    })
}

/// The accepted currencies, uppercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currencies {
    codes: Vec<String>,
    /// The codes [`packed`] (all of them, unless one is longer than 7 bytes): every order
    /// event asks, and comparing integers beats a `memcmp` call per accepted code.
    packed: Option<Vec<u64>>,
}

impl Default for Currencies {
    fn default() -> Self {
        Currencies::new(DEFAULT_CURRENCIES)
    }
}

impl Currencies {
    /// A custom list (case-insensitive).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(codes: I) -> Self {
        let codes: Vec<String> = codes
            .into_iter()
            .map(|c| c.as_ref().trim().to_uppercase())
            .collect();
        let packed = codes.iter().map(|c| packed(c)).collect();
        Currencies { codes, packed }
    }

    /// Whether `code` (already uppercase) is accepted.
    pub fn contains(&self, code: &str) -> bool {
        match (&self.packed, packed(code)) {
            (Some(list), Some(code)) => list.contains(&code),
            // A code too long to pack is not in an all-packed list.
            (Some(_), None) => false,
            (None, _) => self.codes.iter().any(|c| c == code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_list_is_sorted_and_complete() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_country("DE") && is_country("TW") && is_country("AX"));
        assert!(!is_country("UK") && !is_country("EU") && !is_country("XK") && !is_country("de"));
        // The bit table says exactly what the sorted list says, for every two-byte string
        // of interest.
        let bytes: Vec<u8> = (b'A'..=b'Z')
            .chain([b'a', b'z', b'@', b'[', 0, 0xc3])
            .collect();
        for &a in &bytes {
            for &b in &bytes {
                let code = String::from_utf8_lossy(&[a, b]).into_owned();
                assert_eq!(
                    is_country(&code),
                    COUNTRIES.binary_search(&code.as_str()).is_ok(),
                    "{code:?}"
                );
            }
        }
        assert!(!is_country("") && !is_country("D") && !is_country("DEU"));
    }

    #[test]
    fn currencies_match_whole_codes_only() {
        let c = Currencies::default();
        assert!(c.contains("USD") && c.contains("KRW"));
        for no in ["", "US", "USDX", "usd", "USD\0", "EURO", "ABCDEFGHIJ"] {
            assert!(!c.contains(no), "{no:?}");
        }
        let custom = Currencies::new([" btc ", "Tether-USDT-Long"]);
        assert!(custom.contains("BTC") && custom.contains("TETHER-USDT-LONG"));
        assert!(!custom.contains("USD") && !custom.contains("TETHER"));
    }
}
