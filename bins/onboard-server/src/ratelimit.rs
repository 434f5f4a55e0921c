//! Per-client rate limits for the public routes (see `docs/rate-limiting.md`).
//!
//! Two token buckets per client, both [`governor`] keyed limiters:
//!
//! - **requests**: every public request takes a token (`requests_per_minute`, `burst`);
//! - **failures**: every failed bootstrap-key attempt takes a token (`failures_per_hour`,
//!   `failure_burst`). A client whose failure bucket is empty is *locked out*: all its
//!   requests are refused before they cost any work.
//!
//! governor cannot peek at a bucket without taking a token, so the lockout is its own
//! small map: when [`RateLimiter::record_failure`] takes the last failure token
//! (governor's `StateInformationMiddleware` reports the remaining capacity) or is
//! refused, the client is locked out until a failure token is back. After taking the
//! last token that is at most one replenish interval (exact for a burst of failures);
//! after a refusal, exactly governor's `NotUntil`. [`RateLimiter::check_request`] reads
//! the map and never takes a failure token.
//!
//! Clients are keyed by IPv4 address, or by IPv6 /64 prefix: one IPv6 host usually owns
//! a whole /64 and could otherwise rotate addresses to escape its limit.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;

use crate::error::ErrorBody;

/// The limits, per client (from the `[rate_limit]` settings). A rate of 0 disables that
/// bucket; a burst of 0 counts as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sustained public requests per minute.
    pub requests_per_minute: u32,
    /// Requests allowed at once before the per-minute rate applies.
    pub burst: u32,
    /// Sustained failed bootstrap-key attempts per hour.
    pub failures_per_hour: u32,
    /// Failed attempts allowed at once; when they are used up the client is locked out.
    pub failure_burst: u32,
}

/// A refusal: retry after this many whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    fn from_wait(wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self(secs.max(1))
    }

    /// The 429 response: `Retry-After` and the usual `{"error", "message"}` body.
    pub fn response(&self) -> HttpResponse {
        let seconds = self.0.max(1);
        HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
            .insert_header((header::RETRY_AFTER, seconds.to_string()))
            .json(ErrorBody {
                error: "rate_limited".to_owned(),
                message: format!("too many requests from this address; retry in {seconds} s"),
            })
    }
}

type Keyed<C, M> = governor::RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, M>;

struct Inner<C: Clock> {
    limits: Limits,
    requests: Option<Keyed<C, NoOpMiddleware<C::Instant>>>,
    failures: Option<Keyed<C, StateInformationMiddleware>>,
    /// Locked-out clients and when their lockout ends.
    lockouts: Mutex<HashMap<IpAddr, C::Instant>>,
    clock: C,
}

/// The per-client limiter; clones share state. `C` is governor's clock, replaced in
/// tests by `governor::clock::FakeRelativeClock`.
pub struct RateLimiter<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for RateLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Shows the limits and the number of clients tracked, never their addresses.
impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.inner.limits)
            .field("tracked_clients", &self.tracked_clients())
            .finish()
    }
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(limits: &Limits, clock: C) -> Self {
        let burst = |b: u32| NonZeroU32::new(b).unwrap_or(NonZeroU32::MIN);
        let requests = NonZeroU32::new(limits.requests_per_minute).map(|rate| {
            let quota = Quota::per_minute(rate).allow_burst(burst(limits.burst));
            Keyed::<C, NoOpMiddleware<C::Instant>>::new(quota, Default::default(), clock.clone())
        });
        let failures = NonZeroU32::new(limits.failures_per_hour).map(|rate| {
            let quota = Quota::per_hour(rate).allow_burst(burst(limits.failure_burst));
            Keyed::<C, StateInformationMiddleware>::new(quota, Default::default(), clock.clone())
        });
        Self {
            inner: Arc::new(Inner {
                limits: *limits,
                requests,
                failures,
                lockouts: Mutex::new(HashMap::new()),
                clock,
            }),
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// Admits one request from `ip`, or refuses it when the client is locked out
    /// (without taking a request token) or over its request rate.
    pub fn check_request(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        let key = client_key(ip);
        let now = self.inner.clock.now();
        if let Some(until) = self.lockouts().get(&key).filter(|until| **until > now) {
            return Err(RetryAfter::from_wait(until.duration_since(now).into()));
        }
        match &self.inner.requests {
            Some(requests) => requests
                .check_key(&key)
                .map_err(|not_until| RetryAfter::from_wait(not_until.wait_time_from(now))),
            None => Ok(()),
        }
    }

    /// Charges a failed bootstrap-key attempt to `ip`; locks the client out when it
    /// has no failure token left.
    pub fn record_failure(&self, ip: IpAddr) {
        let Some(failures) = &self.inner.failures else {
            return;
        };
        let key = client_key(ip);
        let now = self.inner.clock.now();
        let until = match failures.check_key(&key) {
            Ok(state) if state.remaining_burst_capacity() == 0 => {
                now + Nanos::from(state.quota().replenish_interval())
            }
            Ok(_) => return,
            Err(not_until) => not_until.earliest_possible(),
        };
        let mut lockouts = self.lockouts();
        let entry = lockouts.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Forgets clients whose buckets are full again and whose lockout has ended, so
    /// memory follows recent clients only. Call it every minute or so from a task.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.inner.requests {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.inner.failures {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = self.inner.clock.now();
        let mut lockouts = self.lockouts();
        lockouts.retain(|_, until| *until > now);
        lockouts.shrink_to_fit();
    }

    /// The number of clients with some state held (largest of the three maps).
    pub fn tracked_clients(&self) -> usize {
        let requests = self.inner.requests.as_ref().map_or(0, |l| l.len());
        let failures = self.inner.failures.as_ref().map_or(0, |l| l.len());
        requests.max(failures).max(self.lockouts().len())
    }

    fn lockouts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, C::Instant>> {
        // The map holds plain instants: a panic elsewhere cannot leave it inconsistent.
        self.inner
            .lockouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bucket key: IPv4 (also when IPv4-mapped) as is, IPv6 by its /64 prefix.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// The client's address: the TCP peer, or with `trust_forwarded_for` the rightmost
/// `X-Forwarded-For` entry. Only the rightmost one was written by our own proxy; the
/// entries to its left come from the client and can be forged. Enable it only behind
/// exactly one proxy that appends to the header. Without a usable header, the peer.
pub fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    let forwarded = || {
        let last = req.headers().get_all("x-forwarded-for").last()?;
        let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
        entry
            .parse::<IpAddr>()
            .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip()))
            .ok()
    };
    trust_forwarded_for
        .then(forwarded)
        .flatten()
        .or_else(|| req.peer_addr().map(|a| a.ip()))
}

/// Middleware body for `actix_web::middleware::from_fn`: charges every request it wraps
/// to its client and answers 429 when over the limit. Requests without a known address
/// share one bucket (the unspecified address).
pub async fn enforce<C: Clock, B: MessageBody>(
    limiter: RateLimiter<C>,
    trust_forwarded_for: bool,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let ip = client_ip(req.request(), trust_forwarded_for)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match limiter.check_request(ip) {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(retry) => Ok(req.into_response(retry.response()).map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{web, App};
    use governor::clock::FakeRelativeClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(limits: [u32; 4]) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let [requests_per_minute, burst, failures_per_hour, failure_burst] = limits;
        let limits = Limits {
            requests_per_minute,
            burst,
            failures_per_hour,
            failure_burst,
        };
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(&limits, clock.clone()), clock)
    }

    #[test]
    fn the_request_after_the_burst_is_refused_for_that_ip_only() {
        let (l, clock) = limiter([60, 3, 0, 0]);
        for _ in 0..3 {
            assert_eq!(l.check_request(ip("192.0.2.1")), Ok(()));
        }
        let refused = l.check_request(ip("192.0.2.1")).unwrap_err();
        assert!(refused.0 >= 1, "{refused:?}");
        assert_eq!(l.check_request(ip("192.0.2.2")), Ok(()));
        clock.advance(Duration::from_secs(refused.0));
        assert_eq!(l.check_request(ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn used_up_failures_lock_the_ip_out_and_checks_cost_no_failures() {
        let (l, clock) = limiter([0, 0, 30, 3]);
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            l.record_failure(a);
            for _ in 0..100 {
                assert_eq!(l.check_request(a), Ok(()));
            }
        }
        l.record_failure(a);
        assert_eq!(l.check_request(a), Err(RetryAfter(120)));
        assert_eq!(l.check_request(ip("192.0.2.2")), Ok(()));
        clock.advance(Duration::from_secs(120));
        assert_eq!(l.check_request(a), Ok(()));
        l.record_failure(a);
        assert_eq!(l.check_request(a), Err(RetryAfter(120)));
    }

    #[test]
    fn a_rate_of_zero_disables_the_bucket() {
        let (l, _) = limiter([0, 1, 0, 1]);
        for _ in 0..1000 {
            l.record_failure(ip("192.0.2.1"));
            assert_eq!(l.check_request(ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(l.tracked_clients(), 0);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let (l, _) = limiter([60, 1, 0, 0]);
        assert_eq!(l.check_request(ip("2001:db8:1:2::1")), Ok(()));
        assert!(l.check_request(ip("2001:db8:1:2:ffff::9")).is_err());
        assert_eq!(l.check_request(ip("2001:db8:1:3::1")), Ok(()));
        assert_eq!(l.check_request(ip("::ffff:192.0.2.1")), Ok(()));
        assert!(l.check_request(ip("192.0.2.1")).is_err());
    }

    #[test]
    fn retain_recent_forgets_idle_clients() {
        let (l, clock) = limiter([60, 20, 30, 10]);
        for _ in 0..10 {
            l.check_request(ip("192.0.2.1")).unwrap();
            l.record_failure(ip("192.0.2.1"));
        }
        l.check_request(ip("192.0.2.2")).unwrap();
        assert_eq!(l.tracked_clients(), 2);
        clock.advance(Duration::from_secs(3600));
        l.retain_recent();
        assert_eq!(l.tracked_clients(), 0);
    }

    #[actix_web::test]
    async fn the_429_has_retry_after_and_the_error_body() {
        let response = RetryAfter::from_wait(Duration::from_millis(6001)).response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "7");
        let body = actix_web::body::to_bytes(response.into_body()).await;
        let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert!(body["message"].as_str().unwrap().contains("7 s"));
    }

    #[test]
    fn client_ip_trusts_only_the_rightmost_forwarded_entry_when_told() {
        let cases = [
            (Some("203.0.113.7, 198.51.100.4"), false, "10.0.0.9"),
            (Some("203.0.113.7, 198.51.100.4"), true, "198.51.100.4"),
            (Some("[2001:db8::5]:443"), true, "2001:db8::5"),
            (Some("junk"), true, "10.0.0.9"),
            (None, true, "10.0.0.9"),
        ];
        for (forwarded, trust, expected) in cases {
            let mut req = TestRequest::default().peer_addr("10.0.0.9:4000".parse().unwrap());
            if let Some(value) = forwarded {
                req = req.insert_header(("X-Forwarded-For", value));
            }
            let found = client_ip(&req.to_http_request(), trust);
            assert_eq!(found, Some(ip(expected)), "{forwarded:?} {trust}");
        }
    }

    #[actix_web::test]
    async fn enforce_answers_429_over_the_limit() {
        let (l, _) = limiter([60, 1, 0, 0]);
        let app = App::new()
            .wrap(from_fn(move |req, next| {
                enforce(l.clone(), false, req, next)
            }))
            .route("/public/v1/ca", web::get().to(HttpResponse::Ok));
        let app = init_service(app).await;
        let peer = "192.0.2.1:5000".parse().unwrap();
        let req = || TestRequest::get().uri("/public/v1/ca").peer_addr(peer);
        assert_eq!(call_service(&app, req().to_request()).await.status(), 200);
        let refused = call_service(&app, req().to_request()).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
    }
}
