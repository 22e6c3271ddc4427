//! Where a rate shared by servers keeps its permits: the [`LimiterBackend`]
//! trait, and [`Backend`], the handle `rate(.., backend = ..)` takes.
//!
//! Without a backend, a rate is kept in this process: per stream, per
//! method (`scope = method`) or per key (`key = ..`), in the rate engine's
//! GCRA. With one, the permits come from the backend in **leases**: a stream
//! asks for a batch of permits per round trip (1, then twice as many each
//! time, up to a tenth of a second's worth) and spends them from its own
//! counter, so the backend sees a few round trips a second per stream, not
//! one per message.
//!
//! A backend's limiter is the same GCRA as the in-process one: a lease
//! takes the permits due now, or, when none is, reserves the next ones and
//! says how long until they are due; the stream waits that long and spends
//! them without another round trip.
//!
//! # When the backend fails
//! Every lease is bounded: it waits [`Backend::lease_timeout`] (50 ms by
//! default) at most. A lease that fails or times out marks the backend
//! down for [`Backend::retry_after`] (1 s): meanwhile no stream waits on it,
//! and `on_backend_error` decides: `allow` (the default) lets the stream go
//! on, limited by a limiter of its own at the full rate (so each server
//! keeps at most the rate per stream, as `scope = stream` would), `reject`
//! ends the call with UNAVAILABLE. After `retry_after`, the next lease asks
//! the backend again, so limits resume by themselves once it answers. A
//! failure is logged at WARN at most once every 10 s per backend, and the
//! recovery at INFO.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use super::gcra::Nanos;

/// A store of rate limiters that several servers share (Redis: see
/// `RedisBackend`, feature `redis`).
///
/// A limiter is named by its key (the method, the direction, and the
/// client's key if the rate has one) and defined by the rate and burst each
/// lease carries; the backend keeps, per key, the GCRA's theoretical
/// arrival time (see the rate engine), and must serve a lease atomically.
pub trait LimiterBackend: Send + Sync + fmt::Debug + 'static {
    /// A short name, for logs and metrics (`redis`).
    fn name(&self) -> &'static str;

    /// One round trip: up to `request.permits` permits of the limiter
    /// `request.key`. Permits due now are granted at once (`Lease::wait` zero);
    /// if none is due and `request.wait`, the next `request.permits` are
    /// reserved and `Lease::wait` says when they are due; else the lease has
    /// no permits.
    fn lease(&self, request: LeaseRequest) -> LeaseFuture;

    /// Permits leased and not used (the stream ended holding them): given
    /// back so that others may have them. Best effort and not awaited; the
    /// default drops them.
    fn refund(&self, request: LeaseRequest) {
        let _ = request;
    }
}

/// What [`LimiterBackend::lease`] returns.
pub type LeaseFuture = Pin<Box<dyn Future<Output = Result<Lease, BackendError>> + Send>>;

/// A request for permits from a shared limiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The limiter: `/package.Service/Method:recv`, and `:<client key>` for a
    /// keyed rate.
    pub key: Arc<str>,
    /// The rate, permits per second.
    pub per_second: u64,
    /// Permits that may be taken back to back (the GCRA's tolerance): the
    /// rate's `burst`, and at least a lease.
    pub burst: u64,
    /// Permits wanted (for a refund: given back).
    pub permits: u64,
    /// Reserve permits that are not due yet, or take only those due now.
    pub wait: bool,
    /// How long the rate waits for the answer: a backend may drop a request
    /// that reaches its store later, as nobody will use its permits.
    pub timeout: Duration,
}

/// Permits granted by a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// How many; 0 when none was due and the request did not wait.
    pub permits: u64,
    /// When they are due, from now (zero: now). With no permits: when the
    /// next one is.
    pub wait: Duration,
}

/// Why a lease failed.
#[derive(Debug)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync>);

impl BackendError {
    /// Wraps any error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BackendError(error.into())
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// What a rate does while its backend fails (`on_backend_error = ..`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBackendError {
    /// The stream goes on, limited by itself at the full rate (the default).
    #[default]
    Allow,
    /// The call ends with UNAVAILABLE.
    Reject,
}

/// A [`LimiterBackend`] with its failure policy's state: what
/// `rate(.., backend = ..)` takes. Cheap to clone; clones share the
/// backend, its down time and its counts.
///
/// With Redis (feature `redis`):
///
#[cfg_attr(feature = "redis", doc = "```no_run")]
#[cfg_attr(not(feature = "redis"), doc = "```text")]
/// use std::{sync::LazyLock, time::Duration};
///
/// use interceptor_runtime::{intercept, rate::{Backend, RedisBackend}};
/// use tonic::{Request, Response, Status};
///
/// static REDIS: LazyLock<Backend> = LazyLock::new(|| {
///     Backend::new(RedisBackend::new("redis://127.0.0.1:6379").expect("a redis:// URL"))
///         .lease_timeout(Duration::from_millis(50))
/// });
///
/// struct Uploads;
///
/// impl Uploads {
///     #[intercept(rate(recv = 100, key = metadata("x-api-key"), backend = REDIS.clone()))]
///     async fn upload(&self, _: Request<String>) -> Result<Response<()>, Status> {
///         Ok(Response::new(()))
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Backend {
    shared: Arc<Shared>,
    lease_timeout: Duration,
    retry_after: Duration,
}

struct Shared {
    backend: Box<dyn LimiterBackend>,
    /// Until when leases skip the backend (tokio's clock, as the rate engine
    /// counts it), after a failure.
    down_until: AtomicU64,
    /// Whether the last lease failed (for the INFO when it answers again).
    failing: AtomicBool,
    /// When the last WARN was logged.
    warned_at: AtomicU64,
    counts: [AtomicU64; 5],
}

/// How a backend's leases went, since it was made ([`Backend::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases the backend answered.
    pub answered: u64,
    /// Permits those leases granted.
    pub permits: u64,
    /// Leases that failed.
    pub errors: u64,
    /// Leases that took longer than the lease timeout.
    pub timeouts: u64,
    /// Leases not asked because the backend was down: served by the
    /// failure policy.
    pub skipped: u64,
}

const ANSWERED: usize = 0;
const PERMITS: usize = 1;
const ERRORS: usize = 2;
const TIMEOUTS: usize = 3;
const SKIPPED: usize = 4;

/// How often a failing backend is logged at WARN at most.
const WARN_EVERY: u64 = 10_000_000_000;

impl Backend {
    /// `backend`, with a lease timeout of 50 ms and a retry after 1 s.
    pub fn new(backend: impl LimiterBackend) -> Self {
        Backend {
            shared: Arc::new(Shared {
                backend: Box::new(backend),
                down_until: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                warned_at: AtomicU64::new(0),
                counts: Default::default(),
            }),
            lease_timeout: Duration::from_millis(50),
            retry_after: Duration::from_secs(1),
        }
    }

    /// The longest a lease may take before the failure policy applies.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// How long after a failure leases skip the backend before asking it
    /// again.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        self.shared.backend.name()
    }

    /// How its leases went so far.
    pub fn stats(&self) -> LeaseStats {
        let count = |i: usize| self.shared.counts[i].load(Relaxed);
        LeaseStats {
            answered: count(ANSWERED),
            permits: count(PERMITS),
            errors: count(ERRORS),
            timeouts: count(TIMEOUTS),
            skipped: count(SKIPPED),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.lease_timeout
    }

    pub(crate) fn lease(&self, request: LeaseRequest) -> LeaseFuture {
        self.shared.backend.lease(request)
    }

    pub(crate) fn refund(&self, request: LeaseRequest) {
        self.shared.backend.refund(request)
    }

    /// Whether leases skip the backend now.
    pub(crate) fn is_down(&self, now: Nanos) -> bool {
        self.shared.down_until.load(Relaxed) > now
    }

    pub(crate) fn answered(&self, lease: &Lease) {
        self.count(ANSWERED, "granted");
        self.shared.counts[PERMITS].fetch_add(lease.permits, Relaxed);
        if self.shared.failing.swap(false, Relaxed) {
            tracing::info!(backend = self.name(), "the rate limiter backend answers again; shared limits resume");
        }
    }

    /// A lease failed (`timed_out`, or with `error`): the backend is down
    /// for `retry_after`.
    #[cold]
    pub(crate) fn failed(&self, now: Nanos, timed_out: bool, error: &dyn fmt::Display, policy: OnBackendError) {
        if timed_out {
            self.count(TIMEOUTS, "timeout");
        } else {
            self.count(ERRORS, "error");
        }
        let retry = u64::try_from(self.retry_after.as_nanos()).unwrap_or(u64::MAX);
        self.shared.down_until.fetch_max(now.saturating_add(retry), Relaxed);
        self.shared.failing.store(true, Relaxed);
        let last = self.shared.warned_at.load(Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY)
            && self.shared.warned_at.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        {
            let then = match policy {
                OnBackendError::Allow => "streams go on, each limited by itself to the rate (on_backend_error = allow)",
                OnBackendError::Reject => "calls that need a lease end with UNAVAILABLE (on_backend_error = reject)",
            };
            tracing::warn!(
                backend = self.name(),
                retry_after = ?self.retry_after,
                "the rate limiter backend failed ({error}); {then}; asking it again after {:?} (this warning: at \
                 most once every 10 s)",
                self.retry_after,
            );
        }
    }

    /// A lease served by the failure policy, without asking the backend.
    pub(crate) fn skipped(&self) {
        self.count(SKIPPED, "skipped");
    }

    fn count(&self, which: usize, result: &'static str) {
        self.shared.counts[which].fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("grpc_server_limiter_leases_total", "backend" => self.name(), "result" => result)
            .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = result;
    }
}

impl PartialEq for Backend {
    /// The same backend (clones of one handle), with the same settings.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
            && (self.lease_timeout, self.retry_after) == (other.lease_timeout, other.retry_after)
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("backend", &self.shared.backend)
            .field("lease_timeout", &self.lease_timeout)
            .field("retry_after", &self.retry_after)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A value `backend = ..` takes: a [`Backend`] (or a reference to one), or
/// any [`LimiterBackend`], which gets the default failure settings.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a limiter backend",
    label = "`backend = ..` takes an `interceptor_runtime::rate::Backend` or a `LimiterBackend`",
    note = "e.g. `backend = REDIS.clone()` with `static REDIS: LazyLock<Backend>`"
)]
pub trait IntoBackend {
    /// The handle.
    fn into_backend(self) -> Backend;
}

impl IntoBackend for Backend {
    fn into_backend(self) -> Backend {
        self
    }
}

impl IntoBackend for &Backend {
    fn into_backend(self) -> Backend {
        self.clone()
    }
}

impl<B: LimiterBackend> IntoBackend for B {
    fn into_backend(self) -> Backend {
        Backend::new(self)
    }
}

/// The size of a lease at `per_second`: a tenth of a second's worth, at
/// least 1. See the module docs of `rate` ("Shared limits") for why.
pub(crate) fn lease_size(per_second: u64) -> u64 {
    per_second.div_ceil(10).max(1)
}
