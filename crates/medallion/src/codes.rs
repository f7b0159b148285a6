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

/// Whether `code` (already uppercase) is an assigned ISO 3166-1 alpha-2 code.
pub fn is_country(code: &str) -> bool {
    COUNTRIES.binary_search(&code).is_ok()
}

/// The accepted currencies, uppercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currencies(Vec<String>);

impl Default for Currencies {
    fn default() -> Self {
        Currencies(DEFAULT_CURRENCIES.iter().map(|c| c.to_string()).collect())
    }
}

impl Currencies {
    /// A custom list (case-insensitive).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(codes: I) -> Self {
        Currencies(
            codes
                .into_iter()
                .map(|c| c.as_ref().trim().to_uppercase())
                .collect(),
        )
    }
    /// Whether `code` (already uppercase) is accepted.
    pub fn contains(&self, code: &str) -> bool {
        self.0.iter().any(|c| c == code)
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
    }
}
