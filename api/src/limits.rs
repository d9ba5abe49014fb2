//! Per-client limits: a token bucket per client and kind of request (tickets, status
//! reads), answered `429 rate-limited` with `Retry-After`, and a byte budget per client
//! that each ticket is charged its size against (`429 upload-budget-exceeded`).
//!
//! The client is the peer address, or, behind `trusted_hops` proxies that each append
//! the address they saw to `X-Forwarded-For` (CloudFront, then the ALB), the entry that
//! many places from the right: entries left of it are whatever the client sent and
//! never pick the key. IPv6 clients are keyed by their /64, which one host usually has
//! whole. With sign-in, the client is the token's subject instead. Memory is bounded:
//! at most `MAX_CLIENTS` buckets per limiter.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most clients a limiter remembers; a full table first forgets idle clients (whose
/// buckets have refilled), then the longest unseen.
pub const MAX_CLIENTS: usize = 65_536;

/// Whom a limit applies to: a client address (an IPv6 client's /64), or, with
/// sign-in, the token's subject (by digest, so a key has one small size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Address(IpAddr),
    Subject([u8; 16]),
}

impl ClientKey {
    pub fn subject(subject: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(subject.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        ClientKey::Subject(key)
    }
}

impl From<IpAddr> for ClientKey {
    fn from(address: IpAddr) -> Self {
        ClientKey::Address(address)
    }
}

/// A rate: `per_minute` requests on average, `burst` at once. 0 per minute: no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// The API's limits and how it finds the client.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    pub tickets: Rate,
    pub reads: Rate,
    /// Bytes of uploads one client may be issued tickets for per hour (0: no limit),
    /// charged when the ticket is issued (the policy's content-length-range is exact).
    pub upload_bytes_per_hour: u64,
    /// Proxies in front of the API that append to `X-Forwarded-For` (0: none, the peer
    /// address is the client).
    pub trusted_hops: usize,
}

impl RateLimits {
    /// `minilab api`'s defaults: an album of tickets at once, a page's polling.
    pub const API: RateLimits = RateLimits {
        tickets: Rate {
            per_minute: 30,
            burst: 30,
        },
        reads: Rate {
            per_minute: 600,
            burst: 120,
        },
        upload_bytes_per_hour: 2 << 30,
        trusted_hops: 0,
    };

    /// No limits at all (`minilab up`, tests).
    pub const OFF: RateLimits = RateLimits {
        tickets: Rate {
            per_minute: 0,
            burst: 0,
        },
        reads: Rate {
            per_minute: 0,
            burst: 0,
        },
        upload_bytes_per_hour: 0,
        trusted_hops: 0,
    };
}

/// The client behind a request: see the module's documentation.
pub fn client_key(peer: IpAddr, forwarded_for: Option<&str>, trusted_hops: usize) -> IpAddr {
    let address = match (trusted_hops, forwarded_for) {
        (0, _) | (_, None) => peer,
        (hops, Some(header)) => {
            let entries: Vec<&str> = header.split(',').map(str::trim).collect();
            entries
                .len()
                .checked_sub(hops)
                .and_then(|i| entries[i].parse::<IpAddr>().ok())
                // Fewer entries than trusted proxies: the request did not come through
                // them, and only the peer address is known for certain.
                .unwrap_or(peer)
        }
    };
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(
            v6.to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ),
        v4 => v4,
    }
}

/// The client of a request from `peer` with these headers.
/// The address a request comes from ([`client_of`] its peer and headers).
pub fn address_of(request: &axum::extract::Request, trusted_hops: usize) -> IpAddr {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    client_of(peer, request.headers(), trusted_hops)
}

pub fn client_of(
    peer: Option<SocketAddr>,
    headers: &axum::http::HeaderMap,
    trusted_hops: usize,
) -> IpAddr {
    // Several X-Forwarded-For headers are one list, in order (RFC 9110 §5.3): the
    // entries the proxies appended are the rightmost whichever line holds them, and
    // the first line (which the client may have written) picks nothing.
    let lines: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let forwarded = (!lines.is_empty()).then(|| lines.join(","));
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    client_key(peer, forwarded.as_deref(), trusted_hops)
}

/// What [`Limiter::settle`] does with a bucket that holds the cost: take it, only
/// look, or (holding less) take all there is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Settle {
    Take,
    Peek,
    Drain,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One rate for many clients: `burst` units at once, refilled at `per_second`.
pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl Limiter {
    /// Requests at `rate` (0 per minute: unlimited).
    pub fn new(rate: Rate) -> Self {
        Self::with(
            f64::from(rate.per_minute) / 60.0,
            f64::from(rate.burst.max(1)),
        )
    }

    /// Bytes per hour, all of them usable at once (0: unlimited).
    pub fn bytes_per_hour(bytes: u64) -> Self {
        Self::with(bytes as f64 / 3600.0, bytes as f64)
    }

    fn with(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `client`'s bucket at `now`: `Err(wait)` when it is empty.
    pub fn check(&self, client: impl Into<ClientKey>, now: Instant) -> Result<(), Duration> {
        self.take(client, now, 1.0)
    }

    /// Takes `cost` units from `client`'s bucket at `now`, or nothing and `Err(wait)`:
    /// how long until there would be enough (`Duration::MAX`: never, it exceeds the
    /// burst).
    pub fn take(
        &self,
        client: impl Into<ClientKey>,
        now: Instant,
        cost: f64,
    ) -> Result<(), Duration> {
        self.settle(client.into(), now, cost, Settle::Take)
    }

    /// Whether `client` has a unit left at `now`, taking nothing: `Err(wait)` when not.
    pub fn ready(&self, client: impl Into<ClientKey>, now: Instant) -> Result<(), Duration> {
        self.settle(client.into(), now, 1.0, Settle::Peek)
    }

    /// Takes `cost` units from `client`'s bucket at `now`, or all it has when that is
    /// less (then `false`: the client has nothing left).
    pub fn charge(&self, client: impl Into<ClientKey>, now: Instant, cost: f64) -> bool {
        self.settle(client.into(), now, cost, Settle::Drain).is_ok()
    }

    fn settle(
        &self,
        client: ClientKey,
        now: Instant,
        cost: f64,
        how: Settle,
    ) -> Result<(), Duration> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            make_room(&mut buckets, now, burst / per_second);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= cost {
            if how != Settle::Peek {
                bucket.tokens -= cost;
            }
            Ok(())
        } else if how == Settle::Drain {
            // `charge` tells only whether the cost was covered: no wait to compute.
            bucket.tokens = 0.0;
            Err(Duration::ZERO)
        } else if cost > burst {
            Err(Duration::MAX)
        } else {
            Err(Duration::from_secs_f64((cost - bucket.tokens) / per_second))
        }
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Forgets clients idle long enough to have a full bucket again (forgetting them
/// changes nothing), and if that frees too little, the quarter seen longest ago.
fn make_room(buckets: &mut HashMap<ClientKey, Bucket>, now: Instant, refill_seconds: f64) {
    buckets.retain(|_, b| now.saturating_duration_since(b.updated).as_secs_f64() < refill_seconds);
    if buckets.len() >= MAX_CLIENTS {
        let mut seen: Vec<Instant> = buckets.values().map(|b| b.updated).collect();
        seen.sort_unstable();
        let cutoff = seen[seen.len() / 4];
        buckets.retain(|_, b| b.updated > cutoff);
    }
}

/// The client a request was keyed by: [`guard`] puts it into the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Client(pub ClientKey);

/// The per-client byte budget of upload tickets ([`RateLimits::upload_bytes_per_hour`]):
/// the tickets' [`guard`] puts it into the request's extensions for the handler, which
/// alone knows the size.
#[derive(Clone)]
pub struct UploadBudget(pub std::sync::Arc<Limiter>);

/// Limits one kind of request per client, as axum middleware ([`guard`]).
pub struct Guard {
    limiter: std::sync::Arc<Limiter>,
    budget: Option<UploadBudget>,
    trusted_hops: usize,
    metrics: std::sync::Arc<crate::metrics::ApiMetrics>,
}

impl Guard {
    pub fn new(
        rate: Rate,
        trusted_hops: usize,
        metrics: std::sync::Arc<crate::metrics::ApiMetrics>,
    ) -> Self {
        Self {
            limiter: std::sync::Arc::new(Limiter::new(rate)),
            budget: None,
            trusted_hops,
            metrics,
        }
    }

    /// Hands `budget` to the handler as well.
    pub fn with_budget(mut self, bytes_per_hour: u64) -> Self {
        self.budget = Some(UploadBudget(std::sync::Arc::new(Limiter::bytes_per_hour(
            bytes_per_hour,
        ))));
        self
    }
}

/// What a held request (a long poll) pays while it is held: one unit of its kind's
/// limit per second, so holding a request is never cheaper than polling. The
/// [`guard`] puts one, started, into the request's extensions.
#[derive(Clone)]
pub struct Meter {
    limiter: std::sync::Arc<Limiter>,
    client: ClientKey,
    since: Instant,
}

impl Meter {
    /// Pays for the time since the last payment: `false` when the client had not
    /// enough left (what it had is taken; the request should end now).
    pub fn pay(&mut self, now: Instant) -> bool {
        let held = now.saturating_duration_since(self.since).as_secs_f64();
        self.since = now;
        self.limiter.charge(self.client, now, held)
    }
}

/// Passes the request on (with its [`Client`], its [`Meter`] and any
/// [`UploadBudget`]), or answers 429 `rate-limited` with `Retry-After`.
pub async fn guard(
    axum::extract::State(guard): axum::extract::State<std::sync::Arc<Guard>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Signed in (sign-in runs first and leaves the subject): the subject, wherever it
    // connects from; otherwise the address.
    let client = match request.extensions().get::<crate::auth::Subject>() {
        Some(subject) => ClientKey::subject(&subject.0),
        None => address_of(&request, guard.trusted_hops).into(),
    };
    request.extensions_mut().insert(Client(client));
    request.extensions_mut().insert(Meter {
        limiter: guard.limiter.clone(),
        client,
        since: Instant::now(),
    });
    if let Some(budget) = &guard.budget {
        request.extensions_mut().insert(budget.clone());
    }
    match guard.limiter.check(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            guard.metrics.refused(crate::error::Code::RateLimited);
            let seconds = retry_after(wait);
            crate::error::ApiError::too_many(
                crate::error::Code::RateLimited,
                format!("too many requests from this client; try again in {seconds} s"),
                seconds,
            )
            .into_response()
        }
    }
}

/// Most requests one client may have waiting at once (long polls with `?wait=` and
/// event streams together): one client cannot hold what an instance can serve.
pub const MAX_WAITS_PER_CLIENT: usize = 16;

/// The waiting requests open now, per client ([`MAX_WAITS_PER_CLIENT`]).
#[derive(Clone, Default)]
pub struct Waits(std::sync::Arc<std::sync::Mutex<HashMap<ClientKey, usize>>>);

/// One waiting request's place; given back when dropped.
pub struct WaitPermit {
    waits: Waits,
    client: ClientKey,
}

impl Waits {
    /// A place for one more waiting request of `client`, if it has one left.
    pub fn start(&self, client: ClientKey) -> Option<WaitPermit> {
        let mut open = self.lock();
        let count = open.entry(client).or_default();
        if *count >= MAX_WAITS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(WaitPermit {
            waits: self.clone(),
            client,
        })
    }

    /// How many requests `client` has waiting.
    pub fn open(&self, client: ClientKey) -> usize {
        self.lock().get(&client).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for WaitPermit {
    fn drop(&mut self) {
        let mut open = self.waits.lock();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// Whole seconds to wait, at least one (a wait that never ends: an hour).
pub fn retry_after(wait: Duration) -> u64 {
    if wait == Duration::MAX {
        return 3600;
    }
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(per_minute: u32, burst: u32) -> Limiter {
        Limiter::new(Rate { per_minute, burst })
    }

    #[test]
    fn a_burst_is_served_then_refused_until_tokens_come_back() {
        let tickets = limiter(60, 5);
        let start = Instant::now();
        let a = ip("198.51.100.7");
        for _ in 0..5 {
            assert_eq!(tickets.check(a, start), Ok(()));
        }
        let wait = tickets.check(a, start).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            tickets.check(ip("198.51.100.8"), start),
            Ok(()),
            "another client"
        );
        assert_eq!(tickets.check(a, start + Duration::from_secs(1)), Ok(()));
        assert!(tickets.check(a, start + Duration::from_secs(1)).is_err());
        let off = limiter(0, 0);
        assert!((0..1000).all(|_| off.check(a, start).is_ok()));
    }

    #[test]
    fn a_held_request_pays_per_second_until_the_bucket_is_dry() {
        // 3 at once, one more every 2 s; the request itself took one.
        let limiter = std::sync::Arc::new(limiter(30, 3));
        let (a, start) = (ip("192.0.2.1"), Instant::now());
        limiter.check(a, start).unwrap();
        let mut meter = Meter {
            limiter: limiter.clone(),
            client: a.into(),
            since: start,
        };
        // 2 left; each second held costs 1 and brings 0.5 back: 1, 0.5, then 0 left.
        for second in [2, 3, 4] {
            assert!(meter.pay(start + Duration::from_secs(second)), "{second}");
        }
        // 0.5 there, 1 owed: what there is goes, and the request must end.
        assert!(!meter.pay(start + Duration::from_secs(5)));
        assert!(limiter.check(a, start + Duration::from_secs(5)).is_err());
        // Another client is untouched.
        assert!(limiter.check(ip("192.0.2.2"), start).is_ok());
    }

    #[test]
    fn subjects_have_buckets_of_their_own() {
        let tickets = limiter(60, 1);
        let start = Instant::now();
        assert_eq!(tickets.check(ClientKey::subject("alice"), start), Ok(()));
        assert!(tickets.check(ClientKey::subject("alice"), start).is_err());
        assert_eq!(tickets.check(ClientKey::subject("bob"), start), Ok(()));
        assert_eq!(tickets.check(ip("198.51.100.7"), start), Ok(()));
    }

    #[test]
    fn a_byte_budget_refuses_what_would_exceed_it() {
        let budget = Limiter::bytes_per_hour(100_000);
        let start = Instant::now();
        let a = ip("198.51.100.7");
        assert_eq!(budget.take(a, start, 40_000.0), Ok(()));
        assert_eq!(budget.take(a, start, 40_000.0), Ok(()));
        let wait = budget.take(a, start, 40_000.0).unwrap_err();
        // 20,000 bytes left; the 20,000 more needed come back in 720 s.
        assert_eq!(retry_after(wait), 720);
        assert_eq!(
            budget.take(a, start, 20_000.0),
            Ok(()),
            "what is left may be used"
        );
        assert_eq!(
            budget.take(a, start, 200_000.0),
            Err(Duration::MAX),
            "never fits"
        );
        assert_eq!(budget.take(ip("198.51.100.8"), start, 40_000.0), Ok(()));
    }

    #[test]
    fn the_client_is_never_picked_by_the_client() {
        let peer = ip("10.0.3.9");
        // No trusted proxy: the header is ignored.
        assert_eq!(client_key(peer, Some("203.0.113.5"), 0), peer);
        // Behind the ALB: the entry it appended.
        assert_eq!(
            client_key(peer, Some("6.6.6.6, 203.0.113.5"), 1),
            ip("203.0.113.5")
        );
        // Behind CloudFront and the ALB: the viewer, not what the viewer claimed.
        assert_eq!(
            client_key(peer, Some("6.6.6.6, 203.0.113.5, 130.176.1.1"), 2),
            ip("203.0.113.5")
        );
        // Not through the proxies (too few entries) or garbage: the peer.
        assert_eq!(client_key(peer, Some("203.0.113.5"), 2), peer);
        assert_eq!(client_key(peer, Some("not-an-address"), 1), peer);
        assert_eq!(client_key(peer, None, 1), peer);
        // IPv6 by /64; IPv4-mapped as IPv4.
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), None, 0),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:bbbb::9"), None, 0),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1"), None, 0), ip("192.0.2.1"));
    }

    #[test]
    fn several_forwarded_for_headers_are_one_list() {
        let peer: SocketAddr = "10.0.3.9:40000".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        // The client's own header first, the ALB's appended as a line of its own.
        headers.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        headers.append("x-forwarded-for", "203.0.113.5".parse().unwrap());
        assert_eq!(client_of(Some(peer), &headers, 1), ip("203.0.113.5"));
        headers.append("x-forwarded-for", "7.7.7.7, 198.51.100.7".parse().unwrap());
        assert_eq!(client_of(Some(peer), &headers, 2), ip("7.7.7.7"));
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_clients() {
        let limiter = limiter(60, 10);
        let start = Instant::now();
        for n in 0..(MAX_CLIENTS as u32 * 3) {
            let client = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            let _ = limiter.check(client, start + Duration::from_micros(u64::from(n)));
            assert!(limiter.clients() <= MAX_CLIENTS);
        }
        // A client just seen is remembered (its empty bucket stays empty).
        let busy = ip("192.0.2.99");
        let now = start + Duration::from_secs(1);
        while limiter.check(busy, now).is_ok() {}
        for n in 0..1000u32 {
            let _ = limiter.check(IpAddr::from((0x0b00_0000 + n).to_be_bytes()), now);
        }
        assert!(limiter.check(busy, now).is_err());
    }
}
