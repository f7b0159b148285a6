//! What the ingest API needs to know: where to listen, which topic, who may post, limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::RestError;

/// Who may call the ingest endpoints.
#[derive(Clone)]
pub enum Auth {
    /// Every caller is accepted. Only by explicit choice (`--no-auth`).
    Disabled,
    /// `Authorization: Bearer <token>` must carry one of these tokens.
    BearerTokens(Vec<String>),
}

impl std::fmt::Debug for Auth {
    // Tokens are secrets: never in logs or error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Disabled => f.write_str("Disabled"),
            Auth::BearerTokens(t) => write!(f, "BearerTokens({} tokens)", t.len()),
        }
    }
}

/// Settings of the REST ingest service.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The Kafka topic events go to.
    pub topic: String,
    /// The JSON field whose string value becomes the message key (`order_id`).
    pub key_field: String,
    /// Bronze `_source` of these messages, sent as the `alluvium-source` header
    /// (`rest:orders`).
    pub source_label: String,
    /// Largest accepted request body in bytes; larger bodies get `413`.
    pub max_body_bytes: usize,
    /// How long a request waits for the broker to acknowledge its events before it is
    /// answered `503` (librdkafka's `message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Most messages waiting in the producer's local queue; a request that finds it full is
    /// answered `503` rather than queued without bound.
    pub max_queued_messages: u32,
    /// `Retry-After` seconds sent with `503`.
    pub retry_after_secs: u32,
    /// Caller authentication.
    pub auth: Auth,
}

impl ApiConfig {
    /// Defaults for `topic`: listen on 127.0.0.1:8080, key `order_id`, 16 MiB bodies, 10 s
    /// delivery timeout, 100 000 queued messages, `Retry-After: 1`, and `auth` as given.
    pub fn new(topic: impl Into<String>, auth: Auth) -> Self {
        let topic = topic.into();
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            source_label: format!("rest:{topic}"),
            topic,
            key_field: "order_id".into(),
            max_body_bytes: 16 << 20,
            delivery_timeout: Duration::from_secs(10),
            max_queued_messages: 100_000,
            retry_after_secs: 1,
            auth,
        }
    }

    /// Checks the settings, naming the offending key.
    pub fn validate(&self) -> Result<(), RestError> {
        let bad = |key: &str, reason: &str| {
            Err(RestError::Config {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.topic.trim().is_empty() {
            return bad("api.topic", "is empty");
        }
        if self.key_field.is_empty() {
            return bad("api.key_field", "is empty");
        }
        if self.max_body_bytes == 0 {
            return bad("api.max_body_bytes", "must be at least 1");
        }
        if self.delivery_timeout < Duration::from_millis(100) {
            return bad("api.delivery_timeout_ms", "must be at least 100 ms");
        }
        if self.max_queued_messages == 0 {
            return bad("api.max_queued_messages", "must be at least 1");
        }
        if let Auth::BearerTokens(tokens) = &self.auth {
            if tokens.is_empty() {
                return bad(
                    "api.tokens",
                    "no token configured (give --token / ALLUVIUM_API_TOKENS, or --no-auth)",
                );
            }
            if tokens.iter().any(|t| t.len() < 16 || t.trim() != t) {
                return bad(
                    "api.tokens",
                    "every token needs at least 16 characters and no surrounding whitespace",
                );
            }
        }
        Ok(())
    }
}
