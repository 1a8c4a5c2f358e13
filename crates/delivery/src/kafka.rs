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
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};

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
///
/// After a fatal producer error (librdkafka's `Fatal`: the idempotent producer cannot
/// continue) the producer is built again for the next attempt; [`KafkaSink::reconfigure`]
/// replaces it with one of new settings (credentials reloaded on SIGHUP).
pub struct KafkaSink {
    producer: std::sync::Mutex<FutureProducer>,
    /// The producer's settings, to build it again.
    client: std::sync::Mutex<ClientConfig>,
    /// Set by a fatal producer error: the next attempt builds a new producer.
    broken: std::sync::atomic::AtomicBool,
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
        let cc = client_config(config);
        Ok(KafkaSink {
            producer: std::sync::Mutex::new(cc.create()?),
            client: std::sync::Mutex::new(cc),
            broken: false.into(),
            topic: config.topic.clone(),
        })
    }

    /// Replaces the producer with one built from `config` (its topic is kept): new
    /// credentials take effect at once. Messages the old producer still queues (never
    /// sent, for example while its credentials were refused) fail now, so the outbox
    /// sends them again through the new one; messages in flight finish on the old one.
    /// On an error the old producer stays.
    pub fn reconfigure(&self, config: &KafkaConfig) -> Result<(), KafkaError> {
        let cc = client_config(config);
        let producer: FutureProducer = cc.create()?;
        let old = std::mem::replace(
            &mut *self.producer.lock().unwrap_or_else(|e| e.into_inner()),
            producer,
        );
        old.purge(PurgeConfig::default().queue());
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = cc;
        self.broken
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }

    /// The producer to use: a new one after a fatal producer error.
    fn current(&self) -> FutureProducer {
        let mut producer = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        if self.broken.swap(false, std::sync::atomic::Ordering::AcqRel) {
            let cc = self
                .client
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match cc.create() {
                Ok(p) => {
                    tracing::warn!("kafka producer built again after a fatal error");
                    *producer = p;
                }
                Err(e) => {
                    tracing::error!(error = %e, "kafka producer could not be built again");
                    self.broken
                        .store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
        producer.clone()
    }

    /// Classifies `e`, noting a fatal producer state (rebuilt before the next attempt).
    fn classify_noting(&self, e: &KafkaError) -> DeliveryError {
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.broken
                .store(true, std::sync::atomic::Ordering::Release);
        }
        classify(e)
    }
}

fn client_config(config: &KafkaConfig) -> ClientConfig {
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
    cc
}

/// What an error means for delivery: errors of this one event (too large, an invalid
/// record) are fatal (dead-lettered); errors every event would meet (authentication and
/// authorisation refused, a fatal producer state, a missing or invalid topic, a bad
/// `acks` setting) pause delivery; everything else is retried.
pub fn classify(e: &KafkaError) -> DeliveryError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord,
        ) => DeliveryError::Fatal(e.to_string()),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::DelegationTokenAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::InvalidRequiredAcks,
        ) => DeliveryError::Paused(e.to_string()),
        _ => DeliveryError::Retryable(e.to_string()),
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
        let producer = self.current();
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let record = FutureRecord::to(&self.topic)
                .key(r.key.as_bytes())
                .payload(&r.payload[..])
                .headers(headers(&r.payload));
            match producer.send_result(record) {
                Ok(f) => futures.push(f),
                Err((e, _)) => {
                    let mut out: Vec<Result<(), DeliveryError>> = Vec::new();
                    for f in futures {
                        out.push(match f.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(self.classify_noting(&e)),
                            Err(_) => Err(DeliveryError::Retryable("producer dropped".into())),
                        });
                    }
                    // QueueFull and the like are retryable: retry later from this record.
                    out.push(Err(self.classify_noting(&e)));
                    return out;
                }
            }
        }
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(match f.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(self.classify_noting(&e)),
                Err(_) => Err(DeliveryError::Retryable("producer dropped".into())),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    /// librdkafka's own codes, as a delivery report carries them: an event's own
    /// problem is dead-lettered, a problem every event has pauses, the rest retries.
    #[test]
    fn errors_are_classified_by_what_an_operator_must_do() {
        let kind = |e: &KafkaError| match classify(e) {
            DeliveryError::Retryable(_) => "retry",
            DeliveryError::Fatal(_) => "dead-letter",
            DeliveryError::Paused(_) => "pause",
        };
        for (code, want) in [
            (RDKafkaErrorCode::MessageSizeTooLarge, "dead-letter"),
            (RDKafkaErrorCode::InvalidRecord, "dead-letter"),
            (RDKafkaErrorCode::TopicAuthorizationFailed, "pause"),
            (RDKafkaErrorCode::ClusterAuthorizationFailed, "pause"),
            (RDKafkaErrorCode::SaslAuthenticationFailed, "pause"),
            (RDKafkaErrorCode::Authentication, "pause"),
            (RDKafkaErrorCode::Fatal, "pause"),
            (RDKafkaErrorCode::UnknownTopic, "pause"),
            (RDKafkaErrorCode::MessageTimedOut, "retry"),
            (RDKafkaErrorCode::QueueFull, "retry"),
            (RDKafkaErrorCode::NotLeaderForPartition, "retry"),
            (RDKafkaErrorCode::BrokerTransportFailure, "retry"),
        ] {
            assert_eq!(kind(&produce_error(code)), want, "{code:?}");
        }
    }
}
