//! Credentials that must not end up in logs.
//!
//! Configurations derive `Debug`, and a `{:?}` of one lands in a log or a panic message
//! sooner or later. A credential held as a [`Secret`] prints as `***` there; its value is
//! read only where it is sent ([`Secret::expose`]). It is still an ordinary value otherwise:
//! compared, cloned, (de)serialized as a plain string and parsed from a command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A credential (token, password, secret key) that `Debug` and `Display` print as `***`.
///
/// ```
/// use alluvium_connectors::secret::Secret;
///
/// let token = Secret::from("s3cr3t");
/// assert_eq!(format!("{token:?} {token}"), "*** ***");
/// assert_eq!(token.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::from(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `url` with the password of its user info, if it has one, replaced by `***`: for messages
/// that name a connection (`postgresql://me:***@db/catalog`). Done on the text rather than
/// through `url::Url`, which would re-encode the rest and give up on a URL it cannot parse —
/// exactly the one a failing connection is likely to name.
///
/// ```
/// use alluvium_connectors::secret::redact_url;
///
/// assert_eq!(redact_url("postgresql://me:pw@db:5432/c"), "postgresql://me:***@db:5432/c");
/// assert_eq!(redact_url("sqlite:///lake/catalog.db"), "sqlite:///lake/catalog.db");
/// ```
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let Some(at) = authority.rfind('@') else {
        return url.into();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.into();
    };
    format!(
        "{}{}:***{}",
        &url[..start],
        &authority[..colon],
        &url[start + at..]
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{LakeConfig, S3Options};

    #[test]
    fn configurations_print_no_credentials() {
        let mut config = LakeConfig::new("http://127.0.0.1:8181", "s3://bucket/lake");
        config.catalog_token = Some("token-abc".into());
        config.s3 = S3Options {
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("key-xyz".into()),
            ..S3Options::default()
        };
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("token-abc"), "{printed}");
        assert!(!printed.contains("key-xyz"), "{printed}");
        assert!(printed.contains("catalog_token: Some(***)"), "{printed}");
        assert!(
            printed.contains("AKIA"),
            "the key id is not a secret: {printed}"
        );
        // Still a plain string on the wire and in files.
        let json = serde_json::to_string(&config.catalog_token).unwrap_or_default();
        assert_eq!(json, "\"token-abc\"");
        let back: Option<Secret> = serde_json::from_str(&json).unwrap_or(None);
        assert_eq!(back, config.catalog_token);
    }

    #[test]
    fn urls_lose_their_passwords_only() {
        for (url, shown) in [
            (
                "postgresql://me:s3cr3t@db:5432/cat",
                "postgresql://me:***@db:5432/cat",
            ),
            (
                "postgresql://me:p@ss@db/cat?sslmode=require",
                "postgresql://me:***@db/cat?sslmode=require",
            ),
            ("postgresql://me@db/cat", "postgresql://me@db/cat"),
            ("postgresql://db/cat?user=me", "postgresql://db/cat?user=me"),
            (
                "sqlite:///tmp/lake/catalog.db?mode=rwc",
                "sqlite:///tmp/lake/catalog.db?mode=rwc",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    /// A catalog database that cannot be opened is named in the error without its password.
    #[test]
    fn catalog_errors_print_no_password() {
        let config = LakeConfig::new(
            "postgresql://alluvium:hunter2@127.0.0.1:no-port/catalog",
            "file:///tmp/alluvium-no-such-lake",
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let error = match rt.block_on(config.open_catalog()) {
            Ok(_) => panic!("a catalog on no port was opened"),
            Err(e) => e.to_string(),
        };
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("alluvium:***@127.0.0.1:no-port"), "{error}");
    }
}
