//! Fleet mode: every signal record goes to `firebreak.signals` for the coordinator
//! and for replay, in the signal log's block format ([`super::record`]): one message
//! per stream and batch, keyed by the stream id (so a stream's records stay in order
//! on one partition); policy ticks under [`TICK_KEY`].
//!
//! The engine hands records over without waiting (a bounded queue, drops counted); a
//! thread of its own batches them (at most [`BATCH_RECORDS`] records or
//! [`BATCH_MS`] ms per message) and queues them in the producer, which never blocks
//! either. Signals are telemetry: when the broker is away long enough for both queues
//! to fill, records are dropped and counted, never decisions (those go through the
//! outbox).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_delivery::telemetry::{Publisher, Refused};

use super::SignalSink;
use super::record::{BlockEncoder, SignalRecord};

/// The key of policy-tick records.
pub const TICK_KEY: &str = "__tick";
/// Records per message at most.
pub const BATCH_RECORDS: u64 = 256;
/// A batch is sent at most this long after its first record.
pub const BATCH_MS: u64 = 200;

enum Msg {
    Record(SignalRecord),
    Flush(SyncSender<()>),
}

/// The sink (see the module doc).
#[derive(Debug)]
pub struct KafkaSignals {
    tx: Mutex<Option<SyncSender<Msg>>>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl KafkaSignals {
    /// Starts the batching thread in front of `publisher`, `queue` records deep.
    pub fn start(publisher: Publisher, queue: usize) -> std::io::Result<Arc<KafkaSignals>> {
        let (tx, rx) = sync_channel(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("firebreak-signals-kafka".into())
            .spawn(move || run(&publisher, &rx, &d))?;
        Ok(Arc::new(KafkaSignals {
            tx: Mutex::new(Some(tx)),
            dropped,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Records dropped (queue full, or refused by the producer).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends what is queued and stops (idempotent; blocking, up to 10 s for the broker).
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for KafkaSignals {
    fn drop(&mut self) {
        self.close();
    }
}

fn count_drop(dropped: &AtomicU64, n: u64, why: &str) {
    let before = dropped.fetch_add(n, Ordering::Relaxed);
    // One warning per 10,000 drops.
    if before / 10_000 != (before + n) / 10_000 || before == 0 {
        tracing::warn!(
            reason = why,
            dropped = before + n,
            "signals for the fleet dropped"
        );
    }
}

impl SignalSink for KafkaSignals {
    fn record(&self, record: SignalRecord) {
        let Some(tx) = self.sender() else { return };
        match tx.try_send(Msg::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => count_drop(&self.dropped, 1, "queue full"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        let Some(tx) = self.sender() else { return };
        let (done, wait) = sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// The record's message key.
fn key_of(r: &SignalRecord) -> &str {
    match r {
        SignalRecord::Frame(f) => &f.stream,
        SignalRecord::Event(e) => &e.stream,
        SignalRecord::Tick { .. } => TICK_KEY,
    }
}

struct Batches {
    open: BTreeMap<String, BlockEncoder>,
    since: Option<Instant>,
}

impl Batches {
    fn send(&mut self, publisher: &Publisher, dropped: &AtomicU64, key: &str) {
        if let Some(mut enc) = self.open.remove(key) {
            let n = enc.len();
            let bytes = enc.finish();
            match publisher.send(key, &bytes) {
                Ok(()) => {}
                Err(Refused::QueueFull) => count_drop(dropped, n, "producer queue full"),
                Err(Refused::Kafka(e)) => {
                    tracing::warn!(error = %e, "publishing signals");
                    count_drop(dropped, n, "producer error");
                }
            }
        }
        if self.open.is_empty() {
            self.since = None;
        }
    }

    fn send_all(&mut self, publisher: &Publisher, dropped: &AtomicU64) {
        let keys: Vec<String> = self.open.keys().cloned().collect();
        for k in keys {
            self.send(publisher, dropped, &k);
        }
    }
}

fn run(publisher: &Publisher, rx: &Receiver<Msg>, dropped: &AtomicU64) {
    let mut b = Batches {
        open: BTreeMap::new(),
        since: None,
    };
    let window = Duration::from_millis(BATCH_MS);
    loop {
        let wait = b
            .since
            .map_or(window, |s| window.saturating_sub(s.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Record(r)) => {
                let key = key_of(&r).to_owned();
                let enc = b.open.entry(key.clone()).or_default();
                enc.push(&r);
                if enc.len() >= BATCH_RECORDS {
                    b.send(publisher, dropped, &key);
                } else if b.since.is_none() {
                    b.since = Some(Instant::now());
                }
            }
            Ok(Msg::Flush(done)) => {
                b.send_all(publisher, dropped);
                let _ = publisher.flush(Duration::from_secs(10));
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => b.send_all(publisher, dropped),
            Err(RecvTimeoutError::Disconnected) => {
                b.send_all(publisher, dropped);
                let _ = publisher.flush(Duration::from_secs(10));
                return;
            }
        }
    }
}
