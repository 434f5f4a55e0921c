//! `StatusListener`: the activation signal. A service account subscribes to the
//! devices' status topics (`devices/+/status` by default); the client id is the
//! topic level where the filter has its first `+`. Sightings are handed to a
//! callback in batches, one entry per client id with its latest time, at most
//! every `max_delay` or `max_batch` client ids, so the caller can mark devices
//! active and update `last_seen_at` in a few statements.
//!
//! It runs on its own thread (rumqttc's synchronous client, which drives a
//! private single-threaded tokio runtime), so it needs no runtime from the caller
//! and the callback may block (a database write) without stalling anything else
//! than the listener itself. It reconnects after any failure with exponential
//! backoff and subscribes again on every connection (clean sessions: messages
//! sent while it was away are not replayed; a device that keeps running publishes
//! its status again). [`StatusListener::wait_subscribed`] tells when the broker
//! has acknowledged the subscription.
//!
//! Retained messages are not activity: the broker hands them to every new
//! subscription, long after (or without) the device's last connection, so the
//! listener ignores messages delivered with the retain flag. A live message
//! always comes without it, even when the device set it (MQTT 3.1.1, 3.3.1.3).
//!
//! The listener takes the client id from the topic. That only device X can
//! publish to X's status topic is up to the broker's ACLs: the grants Onboard
//! writes allow it when each device's publish topics contain its own client id
//! (as the default topic templates do).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, Packet, QoS, RecvTimeoutError, SubscribeReasonCode};

use crate::acl::check_topic_filter;
use crate::error::BrokerError;
use crate::mqtt::MqttEndpoint;

/// What to listen to and how to batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// The service account's connection.
    pub endpoint: MqttEndpoint,
    /// A filter with a `+` at the client id's level.
    pub topic_filter: String,
    /// A batch is delivered when it holds this many client ids...
    pub max_batch: usize,
    /// ... or when its first sighting is this old.
    pub max_delay: Duration,
    /// The first wait after a failed connection; doubled up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl StatusConfig {
    /// `devices/+/status`, batches of up to 500 or 1 s, backoff 0.5 s to 30 s.
    pub fn new(endpoint: MqttEndpoint) -> Self {
        Self {
            endpoint,
            topic_filter: "devices/+/status".into(),
            max_batch: 500,
            max_delay: Duration::from_secs(1),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A running listener; dropping it (or [`StatusListener::stop`]) disconnects,
/// delivers the last partial batch and joins the thread.
pub struct StatusListener {
    stop: Arc<AtomicBool>,
    client: Client,
    thread: Option<JoinHandle<()>>,
    subscription: Arc<SubscriptionState>,
    topic_filter: String,
}

/// Where the subscription of the current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    /// Not connected, or the SUBACK has not arrived yet.
    Pending,
    Granted,
    Refused,
}

#[derive(Debug)]
struct SubscriptionState {
    state: Mutex<Subscription>,
    changed: Condvar,
}

impl SubscriptionState {
    fn set(&self, to: Subscription) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = to;
        self.changed.notify_all();
    }

    fn get(&self) -> Subscription {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StatusListener {
    /// Starts the listener thread. Connection problems are not errors here: the
    /// thread keeps trying (and logs); only a bad configuration is.
    pub fn start(
        config: StatusConfig,
        on_batch: impl FnMut(Vec<(String, Instant)>) + Send + 'static,
    ) -> Result<Self, BrokerError> {
        check_topic_filter(&config.topic_filter).map_err(|_| {
            BrokerError::InvalidConfig(format!("status topic filter {:?}", config.topic_filter))
        })?;
        let level = config
            .topic_filter
            .split('/')
            .position(|l| l == "+")
            .ok_or_else(|| {
                BrokerError::InvalidConfig(format!(
                    "the status topic filter {:?} needs a + where the client id is",
                    config.topic_filter
                ))
            })?;
        if config.max_batch == 0 {
            return Err(BrokerError::InvalidConfig(
                "max_batch must be at least 1".into(),
            ));
        }
        let options = config.endpoint.options(1 << 20)?;
        let (client, connection) = Client::new(options, 64);
        let stop = Arc::new(AtomicBool::new(false));
        let subscription = Arc::new(SubscriptionState {
            state: Mutex::new(Subscription::Pending),
            changed: Condvar::new(),
        });
        let topic_filter = config.topic_filter.clone();
        let worker = Worker {
            config,
            level,
            client: client.clone(),
            stop: stop.clone(),
            subscription: subscription.clone(),
            pending: HashMap::new(),
            first: None,
        };
        let thread = std::thread::Builder::new()
            .name("onboard-status".into())
            .spawn(move || worker.run(connection, on_batch))
            .map_err(|e| BrokerError::Mqtt(format!("cannot start the status thread: {e}")))?;
        Ok(Self {
            stop,
            client,
            thread: Some(thread),
            subscription,
            topic_filter,
        })
    }

    /// True when the broker has acknowledged the subscription on the current
    /// connection (false while connecting, after a refusal, or after the
    /// connection dropped until the next acknowledgement).
    pub fn is_subscribed(&self) -> bool {
        self.subscription.get() == Subscription::Granted
    }

    /// Waits up to `timeout` until the broker has acknowledged the subscription
    /// (its SUBACK arrived): from then on, every status message the broker
    /// accepts reaches the listener, as long as the connection lasts. Fails at
    /// once if the broker refused the subscription (the service account's ACL),
    /// or when `timeout` passes first.
    pub fn wait_subscribed(&self, timeout: Duration) -> Result<(), BrokerError> {
        let state = self
            .subscription
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (state, _) = self
            .subscription
            .changed
            .wait_timeout_while(state, timeout, |s| *s == Subscription::Pending)
            .unwrap_or_else(PoisonError::into_inner);
        match *state {
            Subscription::Granted => Ok(()),
            Subscription::Refused => Err(BrokerError::Mqtt(format!(
                "the broker refused the subscription to {:?} (check the service account's ACL)",
                self.topic_filter
            ))),
            Subscription::Pending => Err(BrokerError::Mqtt(format!(
                "the status listener was not subscribed to {:?} within {timeout:?}",
                self.topic_filter
            ))),
        }
    }

    /// Stops the listener (see the type's documentation).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the status listener thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for StatusListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusListener")
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for StatusListener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    config: StatusConfig,
    level: usize,
    client: Client,
    stop: Arc<AtomicBool>,
    subscription: Arc<SubscriptionState>,
    pending: HashMap<String, Instant>,
    first: Option<Instant>,
}

const TICK: Duration = Duration::from_millis(100);
const CONNECTING: Duration = Duration::from_secs(60);

impl Worker {
    fn run(mut self, mut connection: Connection, mut on_batch: impl FnMut(Vec<(String, Instant)>)) {
        let mut backoff = self.config.min_backoff;
        let mut connected = false;
        while !self.stop.load(Ordering::Relaxed) {
            // A poll cut short while connecting would abandon the connection
            // attempt: let rumqttc's own connection timeout end it instead.
            let wait = match self.first {
                _ if !connected => CONNECTING,
                Some(first) => (first + self.config.max_delay)
                    .saturating_duration_since(Instant::now())
                    .min(TICK),
                None => TICK,
            };
            match connection.recv_timeout(wait) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    self.subscription.set(Subscription::Pending);
                    backoff = self.config.min_backoff;
                    if let Err(e) = self
                        .client
                        .try_subscribe(self.config.topic_filter.clone(), QoS::AtMostOnce)
                    {
                        tracing::warn!(error = %e, "status listener: cannot subscribe");
                    }
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        tracing::error!(
                            filter = %self.config.topic_filter,
                            "status listener: the broker refused the subscription (check the service account's ACL)"
                        );
                        self.subscription.set(Subscription::Refused);
                    } else {
                        self.subscription.set(Subscription::Granted);
                    }
                }
                // A retained message is an old one the broker replays to a new
                // subscription: no sign of life.
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.retain => {
                    tracing::debug!(topic = %p.topic, "status listener: retained message ignored");
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.seen(&p.topic),
                Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Err(e)) => {
                    connected = false;
                    self.subscription.set(Subscription::Pending);
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "status listener: connection failed");
                    self.flush(&mut on_batch);
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let due = self
                .first
                .is_some_and(|f| f.elapsed() >= self.config.max_delay);
            if due || self.pending.len() >= self.config.max_batch {
                self.flush(&mut on_batch);
            }
        }
        self.subscription.set(Subscription::Pending);
        self.flush(&mut on_batch);
    }

    fn seen(&mut self, topic: &str) {
        let Some(id) = topic.split('/').nth(self.level) else {
            return;
        };
        if id.is_empty() {
            return;
        }
        let now = Instant::now();
        self.pending.insert(id.to_owned(), now);
        self.first.get_or_insert(now);
    }

    fn flush(&mut self, on_batch: &mut impl FnMut(Vec<(String, Instant)>)) {
        self.first = None;
        if self.pending.is_empty() {
            return;
        }
        let mut batch: Vec<(String, Instant)> = self.pending.drain().collect();
        batch.sort_by_key(|(_, t)| *t);
        on_batch(batch);
    }

    /// Sleeps up to `d`, waking early when stopped.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(TICK));
        }
    }
}
