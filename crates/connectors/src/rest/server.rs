//! The HTTP service: routes, the produce path, readiness, graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::body::{split_events, BodyFormat};
use super::metrics::{EventLabels, RequestLabels};
use super::{ApiConfig, ApiMetrics, Auth, RestError};
use crate::kafka::{KafkaConfig, SOURCE_HEADER};

/// The OpenAPI document of this service (kept in `docs/api/openapi.json`).
const OPENAPI: &str = include_str!("../../../../docs/api/openapi.json");

/// How often the broker is probed for `/readyz` (and to fail requests fast while it is down).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

struct Shared {
    config: ApiConfig,
    /// The producer's settings, to replace it after a fatal error.
    client_config: rdkafka::ClientConfig,
    /// The current producer. Replaced when librdkafka reports a fatal error (an idempotent
    /// producer fenced after its messages timed out while the broker was down stays fenced
    /// for good; the service must outlive the outage).
    producer: std::sync::RwLock<Arc<FutureProducer>>,
    /// SHA-256 of each accepted token: comparing fixed-size digests in constant time leaks
    /// neither a token's content nor its length.
    token_digests: Vec<[u8; 32]>,
    ready: AtomicBool,
    not_ready_reason: std::sync::Mutex<String>,
    metrics: ApiMetrics,
    registry: Arc<Registry>,
}

/// The REST ingest service for one topic.
pub struct IngestApi {
    shared: Arc<Shared>,
}

impl IngestApi {
    /// Validates `config` and creates the idempotent producer. `registry` is what `/metrics`
    /// serves; the service's own metrics must already be registered in it.
    pub fn new(
        config: ApiConfig,
        kafka: &KafkaConfig,
        metrics: ApiMetrics,
        registry: Arc<Registry>,
    ) -> Result<Self, RestError> {
        config.validate()?;
        kafka.validate().map_err(|e| RestError::Config {
            key: "kafka.brokers".into(),
            reason: e.to_string(),
        })?;
        let mut client = kafka.client_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                config.max_queued_messages.to_string(),
            );
        let producer: FutureProducer = client.create().map_err(RestError::Producer)?;
        let producer = std::sync::RwLock::new(Arc::new(producer));
        let token_digests = match &config.auth {
            Auth::Disabled => Vec::new(),
            Auth::BearerTokens(tokens) => tokens
                .iter()
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        };
        Ok(IngestApi {
            shared: Arc::new(Shared {
                config,
                client_config: client,
                producer,
                token_digests,
                ready: AtomicBool::new(false),
                not_ready_reason: std::sync::Mutex::new("broker not probed yet".into()),
                metrics,
                registry,
            }),
        })
    }

    /// The routes, for embedding in a larger application.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/orders", post(post_events))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi))
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish (each still waits for its acknowledgements) and flushes the producer.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RestError> {
        let probe = tokio::spawn(probe_broker(self.shared.clone()));
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        probe.abort();
        let producer = self.shared.producer();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "flushing the producer at shutdown");
        }
        served.map_err(|source| RestError::Io {
            context: "serving the ingest API".into(),
            source,
        })
    }
}

/// Keeps `ready` current: the broker answers a metadata request and the topic has partitions.
async fn probe_broker(shared: Arc<Shared>) {
    loop {
        let s = shared.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            let topic = s.config.topic.as_str();
            match s
                .producer()
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(2))
            {
                Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                    _ => Err(format!("topic `{topic}` does not exist")),
                },
                Err(e) => Err(format!("broker unreachable: {e}")),
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("probe failed: {e}")));
        let ready = verdict.is_ok();
        if ready != shared.ready.swap(ready, Ordering::Relaxed) {
            match &verdict {
                Ok(()) => tracing::info!(topic = %shared.config.topic, "broker reachable: ready"),
                Err(reason) => tracing::warn!(%reason, "not ready"),
            }
        }
        if let (Err(reason), Ok(mut slot)) = (verdict, shared.not_ready_reason.lock()) {
            *slot = reason;
        }
        shared.metrics.broker_ready.set(i64::from(ready));
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

impl Shared {
    fn producer(&self) -> Arc<FutureProducer> {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a failed send: if `used` cannot produce any more (a fatal error, or the broker
    /// fenced its producer id), puts a fresh producer in its place — once, however many
    /// requests saw the failure.
    fn replace_if_broken(&self, used: &Arc<FutureProducer>, error: &KafkaError) {
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
            )
        );
        let (code, reason) = match used.client().fatal_error() {
            Some(fatal) => fatal,
            None if fenced => (
                error
                    .rdkafka_error_code()
                    .unwrap_or(RDKafkaErrorCode::Fatal),
                error.to_string(),
            ),
            None => return,
        };
        let mut slot = match self.producer.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !Arc::ptr_eq(&slot, used) {
            return;
        }
        match self.client_config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(?code, %reason, "the Kafka producer hit a fatal error; replaced it");
                *slot = Arc::new(fresh);
            }
            Err(e) => tracing::error!(error = %e, "replacing the failed Kafka producer"),
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    json(
        status,
        serde_json::json!({ "error": code, "message": message.to_string() }),
    )
}

fn unavailable(shared: &Shared, message: impl std::fmt::Display) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    if let Ok(v) = HeaderValue::from_str(&shared.config.retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    if matches!(shared.config.auth, Auth::Disabled) {
        return true;
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
    else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Every configured token is compared, so timing does not tell which one matched.
    let mut ok = subtle::Choice::from(0);
    for d in &shared.token_digests {
        ok |= d.ct_eq(&digest);
    }
    ok.into()
}

async fn post_events(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let response = produce_request(&shared, request).await;
    let labels = RequestLabels {
        route: "/v1/orders",
        status: response.status().as_u16(),
    };
    shared.metrics.requests.get_or_create(&labels).inc();
    shared
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn produce_request(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !authorized(shared, &parts.headers) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = BodyFormat::from_content_type(content_type) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type `{content_type}` is not accepted; send application/json or application/x-ndjson"),
        );
    };
    let limit = shared.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes; split it into several requests"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                return too_large();
            }
            return error(
                StatusCode::BAD_REQUEST,
                "body_read",
                format!("reading the body: {e}"),
            );
        }
    };
    let events = match split_events(format, &bytes, &shared.config.key_field) {
        Ok(events) => events,
        Err(e) => return error(StatusCode::BAD_REQUEST, "not_json", e),
    };
    if !shared.ready.load(Ordering::Relaxed) {
        let reason = shared
            .not_ready_reason
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        return unavailable(shared, format!("Kafka is not available ({reason})"));
    }
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: SOURCE_HEADER,
        value: Some(shared.config.source_label.as_bytes()),
    });
    let topic = shared.config.topic.as_str();
    let producer = shared.producer();
    let mut deliveries = Vec::with_capacity(events.len());
    for event in &events {
        let mut record = FutureRecord::to(topic)
            .payload(event.raw)
            .headers(headers.clone());
        if let Some(k) = &event.key {
            record = record.key(k.as_bytes());
        }
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                count_rejected(shared, events.len());
                return unavailable(shared, "the producer queue is full; retry later");
            }
            Err((e, _)) => {
                count_rejected(shared, events.len());
                shared.replace_if_broken(&producer, &e);
                return unavailable(shared, format!("producing to Kafka: {e}"));
            }
        }
    }
    for delivery in futures::future::join_all(deliveries).await {
        let failure = match delivery {
            Ok(Ok(_)) => continue,
            Ok(Err((e, _))) => {
                shared.replace_if_broken(&producer, &e);
                e.to_string()
            }
            Err(_) => "the producer was closed".to_string(),
        };
        count_rejected(shared, events.len());
        return unavailable(
            shared,
            format!("Kafka did not acknowledge every event ({failure}); retry the request"),
        );
    }
    shared
        .metrics
        .events
        .get_or_create(&EventLabels {
            outcome: "accepted",
        })
        .inc_by(events.len() as u64);
    json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "accepted": events.len() }),
    )
}

fn count_rejected(shared: &Shared, n: usize) {
    shared
        .metrics
        .events
        .get_or_create(&EventLabels {
            outcome: "unavailable",
        })
        .inc_by(n as u64);
}

async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Relaxed) {
        json(StatusCode::OK, serde_json::json!({ "status": "ready" }))
    } else {
        let reason = shared
            .not_ready_reason
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "unavailable", "reason": reason }),
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    encode_metrics(&shared.registry)
}

/// A registry in the OpenMetrics text format, as an HTTP response.
fn encode_metrics(registry: &Registry) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Body::from(text),
    )
        .into_response()
}

/// `GET /metrics` and `GET /healthz` over `registry`: the HTTP face of a process that has no
/// other (a CDC or file ingester), for Prometheus to scrape.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { encode_metrics(&registry) }
            }),
        )
        .route("/healthz", get(healthz))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
