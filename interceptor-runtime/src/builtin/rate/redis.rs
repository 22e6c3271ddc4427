//! `RedisBackend` (feature `redis`): a rate's limiters in Redis, shared by
//! every server that uses the same Redis.
//!
//! Each limiter is one Redis string, the GCRA's theoretical arrival time in
//! microseconds of Redis's own clock (`TIME`), so the servers' clocks need
//! not agree. A lease is one Lua script, run with `EVALSHA` (loaded again
//! by the `redis` crate when Redis answers NOSCRIPT, after a restart), that
//! does what the in-process engine's `Gcra::step` does, atomically: it takes
//! the permits due now, or reserves the next ones and answers how long until
//! they are due. The key expires when its limiter would be full again, so
//! Redis holds only the limiters in use, and forgetting one loses nothing.
//!
//! The connection is a `redis::aio::ConnectionManager`, made on the first
//! lease (inside the server's tokio runtime): one multiplexed connection for
//! all streams, reconnected in the background when it breaks.

use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use ::redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, RedisResult, Script,
};

use super::backend::{BackendError, Lease, LeaseFuture, LeaseRequest, LimiterBackend};

/// The lease: `KEYS[1]` the limiter; `ARGV`: microseconds per permit,
/// tolerance in microseconds, permits wanted, `1` to reserve permits not
/// yet due, and the request's deadline on Redis's clock (0: none). Answers
/// `{permits, microseconds until they are due, Redis's clock}` (with no
/// permits: until the next one is). A request that comes past its deadline
/// (Redis was slow: the server gave up waiting, or is about to) takes
/// nothing and answers -1 permits, so that a slow spell does not leave
/// permits reserved that nobody will use.
const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local deadline = tonumber(ARGV[5])
if deadline > 0 and now > deadline then return {-1, 0, now} end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local due = math.floor((now + tolerance - tat) / interval)
local permits = want
local at = now
if due >= 1 then
  permits = math.min(due, want)
elseif ARGV[4] == '1' then
  at = tat + permits * interval - tolerance
else
  return {0, math.ceil(tat + interval - tolerance - now), now}
end
tat = tat + permits * interval
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {permits, math.ceil(at - now), now}
";

/// A refund: `KEYS[1]` the limiter; `ARGV[1]` the microseconds the permits
/// given back stand for.
const REFUND: &str = r"
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(stored) - tonumber(ARGV[1])
if tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return 1
";

/// Rate limiters in Redis (feature `redis`), shared by every server that
/// uses the same Redis. Cheap to clone: clones share the connection.
///
/// Each limiter is one Redis string, the GCRA's theoretical arrival time on
/// Redis's clock (`TIME`), so the servers' clocks need not agree; it expires
/// when the limiter would be full again. A lease is one Lua script, run with
/// `EVALSHA` (loaded again after a Redis restart), that takes the permits
/// due now or reserves the next ones, atomically. The connection is a
/// `redis::aio::ConnectionManager`, made on the first lease or by
/// [`connect`](Self::connect), which reconnects when it breaks.
///
/// ```no_run
/// use std::{sync::LazyLock, time::Duration};
/// use interceptor_runtime::rate::{Backend, RedisBackend};
///
/// static REDIS: LazyLock<Backend> = LazyLock::new(|| {
///     let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
///     Backend::new(RedisBackend::new(url.as_str()).expect("a redis:// URL")).lease_timeout(Duration::from_millis(50))
/// });
/// // #[intercept(rate(recv = 100, key = metadata("x-api-key"), backend = REDIS.clone()))]
/// ```
///
/// At start-up, `RedisBackend::connect` makes the connection before the
/// first lease needs it.
#[derive(Clone)]
pub struct RedisBackend(Arc<Inner>);

struct Inner {
    client: Client,
    prefix: String,
    lease: Script,
    refund: Script,
    manager: OnceLock<ConnectionManager>,
    /// Redis's clock minus ours (µs), from the last answer; `i64::MIN`
    /// before the first.
    offset: AtomicI64,
}

impl RedisBackend {
    /// A backend for the Redis at `url` (`redis://host:port/db`); nothing is
    /// connected until the first lease. Keys are prefixed
    /// `interceptor:rate:`.
    pub fn new(url: &str) -> RedisResult<Self> {
        Ok(Self::from_client(Client::open(url)?))
    }

    /// A backend on a client made as you need it (TLS, credentials ...).
    pub fn from_client(client: Client) -> Self {
        RedisBackend(Arc::new(Inner {
            client,
            prefix: "interceptor:rate:".into(),
            lease: Script::new(LEASE),
            refund: Script::new(REFUND),
            manager: OnceLock::new(),
            offset: AtomicI64::new(i64::MIN),
        }))
    }

    /// Prefixes the limiters' keys with `prefix` instead (servers that share
    /// a limit must use the same).
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let inner = &*self.0;
        RedisBackend(Arc::new(Inner {
            client: inner.client.clone(),
            prefix: prefix.into(),
            lease: Script::new(LEASE),
            refund: Script::new(REFUND),
            manager: OnceLock::new(),
            offset: AtomicI64::new(i64::MIN),
        }))
    }

    /// Connects now and loads the scripts, instead of on the first lease
    /// (which would then wait for the connection, and may time out: the
    /// failure policy then applies for the backend's `retry_after`). Call it
    /// at start-up, inside the server's runtime.
    pub async fn connect(&self) -> RedisResult<()> {
        let mut connection = self.connection()?;
        self.0.lease.load_async(&mut connection).await?;
        self.0.refund.load_async(&mut connection).await?;
        Ok(())
    }

    /// The connection, made on first use.
    fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some(manager) = self.0.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.0.client.clone(), config)?;
        Ok(self.0.manager.get_or_init(|| manager).clone())
    }

    fn key(&self, request: &LeaseRequest) -> String {
        format!("{}{}", self.0.prefix, request.key)
    }
}

/// Our clock, in microseconds from a process-wide origin.
fn clock_us() -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    i64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds per permit at `per_second`.
fn interval_us(per_second: u64) -> f64 {
    1_000_000.0 / per_second.max(1) as f64
}

impl LimiterBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn lease(&self, request: LeaseRequest) -> LeaseFuture {
        let this = self.clone();
        Box::pin(async move {
            let mut connection = this.connection().map_err(BackendError::new)?;
            let interval = interval_us(request.per_second);
            let tolerance = interval * request.burst.max(1) as f64;
            // The request's deadline on Redis's clock, once we know how far
            // it is from ours.
            let offset = this.0.offset.load(Relaxed);
            let timeout = i64::try_from(request.timeout.as_micros()).unwrap_or(i64::MAX);
            let deadline = match offset {
                i64::MIN => 0,
                offset => clock_us().saturating_add(timeout).saturating_add(offset).max(1),
            };
            let (permits, wait_us, redis_now): (i64, u64, i64) = this
                .0
                .lease
                .key(this.key(&request))
                .arg(format!("{interval:.6}"))
                .arg(format!("{tolerance:.6}"))
                .arg(request.permits.max(1))
                .arg(if request.wait { "1" } else { "0" })
                .arg(deadline)
                .invoke_async(&mut connection)
                .await
                .map_err(BackendError::new)?;
            // Half a round trip late, which the deadline can spare.
            this.0.offset.store(redis_now - clock_us(), Relaxed);
            let Ok(permits) = u64::try_from(permits) else {
                return Err(BackendError::new("the lease reached Redis after its deadline"));
            };
            Ok(Lease { permits, wait: Duration::from_micros(wait_us) })
        })
    }

    fn refund(&self, request: LeaseRequest) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let this = self.clone();
        runtime.spawn(async move {
            let Ok(mut connection) = this.connection() else { return };
            let back = interval_us(request.per_second) * request.permits as f64;
            let mut refund = this.0.refund.key(this.key(&request));
            refund.arg(format!("{back:.6}"));
            // Bounded like a lease; a refund that fails is only lost.
            let _ = tokio::time::timeout(Duration::from_secs(1), refund.invoke_async::<i64>(&mut connection)).await;
        });
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.0.client.get_connection_info().addr())
            .field("prefix", &self.0.prefix)
            .finish()
    }
}
