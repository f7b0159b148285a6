use std::time::Duration;

use rdkafka::ClientConfig;

use super::error::KafkaConnectorError;

/// Settings a reading consumer takes where librdkafka's defaults do not suit a pipeline;
/// `--kafka-option` (or [`KafkaConfig::settings`]) overrides each.
///
/// - `queued.max.messages.kbytes`: the prefetch per partition queue (the source splits every
///   partition off to its own queue, where this bound applies per partition). librdkafka's
///   64 MiB per partition was 0.6 GiB of a 2.0 GiB peak while a pipeline caught up on a
///   backlog, and 4 MiB kept the same throughput (docs/performance.md, stops 18 and 19).
pub const CONSUMER_DEFAULTS: [(&str, &str); 1] = [("queued.max.messages.kbytes", "8192")];

/// How to reach Kafka.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Extra librdkafka settings (`security.protocol`, `sasl.*`, ...), applied last.
    pub settings: Vec<(String, String)>,
    /// Timeout of one metadata request.
    pub request_timeout: Duration,
    /// How many times start-up requests are retried (with exponential backoff) before the
    /// brokers are reported unreachable.
    pub retries: u32,
}

impl KafkaConfig {
    /// A configuration for `brokers` with defaults for everything else.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            settings: Vec::new(),
            request_timeout: Duration::from_secs(5),
            retries: 5,
        }
    }

    /// Checks the settings, naming the offending key.
    pub fn validate(&self) -> Result<(), KafkaConnectorError> {
        if self.brokers.trim().is_empty() {
            return Err(KafkaConnectorError::Config {
                key: "kafka.brokers".into(),
                reason: "is empty".into(),
            });
        }
        for b in self.brokers.split(',') {
            let ok = b
                .trim()
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(KafkaConnectorError::Config {
                    key: "kafka.brokers".into(),
                    reason: format!("`{b}` is not host:port"),
                });
            }
        }
        Ok(())
    }

    /// A librdkafka client configuration with the brokers and extra settings.
    pub fn client_config(&self) -> ClientConfig {
        self.config_with(&[])
    }

    /// The configuration of a consumer that reads records: [`CONSUMER_DEFAULTS`], then the
    /// brokers and extra settings (which override the defaults).
    pub fn consumer_config(&self) -> ClientConfig {
        self.config_with(&CONSUMER_DEFAULTS)
    }

    fn config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        c.set("bootstrap.servers", &self.brokers);
        c.set(
            "socket.timeout.ms",
            self.request_timeout.as_millis().max(10).to_string(),
        );
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c
    }

    /// Runs `op` with exponential backoff until it succeeds or the retries are used up;
    /// every failed attempt is logged.
    pub(crate) fn with_retries<T>(
        &self,
        what: &str,
        mut op: impl FnMut() -> Result<T, rdkafka::error::KafkaError>,
    ) -> Result<T, KafkaConnectorError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if attempt <= self.retries => {
                    tracing::warn!(brokers = %self.brokers, attempt, error = %e, "{what} failed; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(source) => {
                    return Err(KafkaConnectorError::Unreachable {
                        brokers: self.brokers.clone(),
                        attempts: attempt,
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_brokers_name_the_key() {
        let err = KafkaConfig::new("localhost")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.brokers") && err.contains("localhost"),
            "{err}"
        );
        assert!(KafkaConfig::new("").validate().is_err());
        assert!(KafkaConfig::new("127.0.0.1:9092,b:1").validate().is_ok());
    }

    #[test]
    fn consumers_bound_their_prefetch_unless_told_otherwise() {
        let prefetch = |c: ClientConfig| c.get("queued.max.messages.kbytes").map(str::to_owned);
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        assert_eq!(prefetch(config.consumer_config()).as_deref(), Some("8192"));
        assert_eq!(prefetch(config.client_config()), None);
        config
            .settings
            .push(("queued.max.messages.kbytes".into(), "65536".into()));
        assert_eq!(prefetch(config.consumer_config()).as_deref(), Some("65536"));
    }
}
