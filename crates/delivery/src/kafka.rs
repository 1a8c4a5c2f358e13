//! The Kafka sink: an idempotent rdkafka producer (acks=all), keyed by stream id so each
//! stream's events stay in order in one partition, with CloudEvents headers.
//!
//! Headers follow the CloudEvents Kafka protocol binding's attribute names (`ce_id`,
//! `ce_type`, `ce_source`, `ce_specversion`, `ce_subject`) alongside the
//! structured-mode body (`content-type: application/cloudevents+json`), so consumers can
//! route or drop duplicates without parsing the body.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::{DeliveryError, Record, Sink};

/// Kafka connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub bootstrap_servers: String,
    /// The topic escalations go to.
    pub topic: String,
    /// How long librdkafka keeps retrying one message before reporting a timeout (the
    /// replayer then retries it again: the outbox, not librdkafka, is the buffer).
    pub message_timeout: Duration,
    /// Any further librdkafka properties, passed through: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ...
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Settings for a broker at `bootstrap_servers` and `topic`, defaults otherwise.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            message_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

/// Delivers outbox records to Kafka.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the producer (no connection is made until the first send).
    pub fn new(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .set("client.id", "firebreak");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        Ok(KafkaSink {
            producer: cc.create()?,
            topic: config.topic.clone(),
        })
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// Fatal errors: retrying cannot help.
pub fn classify(e: &KafkaError) -> DeliveryError {
    let code = e.rdkafka_error_code();
    let fatal = matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidRequiredAcks
                | RDKafkaErrorCode::Fatal
        )
    );
    if fatal {
        DeliveryError::Fatal(e.to_string())
    } else {
        DeliveryError::Retryable(e.to_string())
    }
}

fn headers(payload: &[u8]) -> OwnedHeaders {
    let event: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let mut h = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/cloudevents+json; charset=utf-8"),
    });
    for (attr, header) in [
        ("id", "ce_id"),
        ("type", "ce_type"),
        ("source", "ce_source"),
        ("specversion", "ce_specversion"),
        ("subject", "ce_subject"),
        ("time", "ce_time"),
    ] {
        if let Some(v) = event.get(attr).and_then(|v| v.as_str()) {
            h = h.insert(Header {
                key: header,
                value: Some(v),
            });
        }
    }
    h
}

impl Sink for KafkaSink {
    async fn deliver(&self, records: &[Record]) -> Vec<Result<(), DeliveryError>> {
        // Enqueue the whole batch first (librdkafka pipelines it, in order), then await
        // the acknowledgements in order.
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let record = FutureRecord::to(&self.topic)
                .key(r.key.as_bytes())
                .payload(&r.payload[..])
                .headers(headers(&r.payload));
            match self.producer.send_result(record) {
                Ok(f) => futures.push(f),
                Err((e, _)) => {
                    let mut out: Vec<Result<(), DeliveryError>> = Vec::new();
                    for f in futures {
                        out.push(match f.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(classify(&e)),
                            Err(_) => Err(DeliveryError::Retryable("producer dropped".into())),
                        });
                    }
                    // QueueFull and the like are retryable: retry later from this record.
                    out.push(Err(classify(&e)));
                    return out;
                }
            }
        }
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(match f.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(classify(&e)),
                Err(_) => Err(DeliveryError::Retryable("producer dropped".into())),
            });
        }
        out
    }
}
