//! [`check_async`]: an asynchronous check before the handler, from a
//! closure, with a time limit of its own.

use std::{fmt, future::Future, time::Duration};

use tonic::{metadata::MetadataMap, Code, Status};

use crate::{engine::CallContext, interceptor::Interceptor};

/// An interceptor that awaits `check` before the handler runs: a token
/// introspection, a quota lookup, anything that waits for a service. `Err`
/// rejects the call with that status, and the handler never runs. Named
/// `check_async` unless [`named`](AsyncCheck::named).
///
/// `check` gets the call's context and the request's metadata, and returns
/// the future to await. The future cannot borrow them: take what it needs
/// first (a header's value, `ctx.method()`, which is `'static`), then
/// `async move`.
///
/// With a [`timeout`](AsyncCheck::timeout), a check that has not finished
/// in time is dropped and the call ends with UNAVAILABLE (or the code given
/// to [`timeout_code`](AsyncCheck::timeout_code)), `"check `NAME` did not
/// finish within 2s"`. UNAVAILABLE because what was slow is a service the
/// server depends on, not the request: the client may try again later.
/// DEADLINE_EXCEEDED would say the client's own deadline passed.
///
/// If the client goes away while the check is pending, its future is
/// dropped with the handler's, and the call ends CANCELLED. See
/// [`Interceptor::before_handler`] for how checks compose.
///
/// ```
/// use std::time::Duration;
///
/// use interceptor_runtime::check_async;
/// use tonic::Status;
///
/// /// A remote quota service.
/// async fn calls_left(client: &str) -> u64 {
///     # let _ = client;
///     100
/// }
///
/// let quota = check_async(|_ctx, metadata| {
///     // What the future needs, taken from the metadata first.
///     let client = metadata.get("x-client-id").and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_owned();
///     async move {
///         match calls_left(&client).await {
///             0 => Err(Status::resource_exhausted(format!("client `{client}` has no calls left"))),
///             _ => Ok(()),
///         }
///     }
/// })
/// .named("quota")
/// .timeout(Duration::from_secs(2));
/// # let _ = quota;
/// ```
pub fn check_async<F, Fut>(check: F) -> AsyncCheck<F>
where
    F: Fn(&CallContext, &MetadataMap) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    AsyncCheck { check, name: "check_async", timeout: None, timeout_code: Code::Unavailable }
}

/// What [`check_async`] makes.
#[derive(Clone)]
pub struct AsyncCheck<F> {
    check: F,
    name: &'static str,
    timeout: Option<Duration>,
    timeout_code: Code,
}

impl<F> AsyncCheck<F> {
    /// Names the check: the interceptor that ended a call it rejects, and
    /// the check a timeout's status names.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Ends the call with UNAVAILABLE (or [`timeout_code`](Self::timeout_code)'s)
    /// when the check has not finished within `limit`, measured on tokio's
    /// clock; the check's future is dropped.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The code a [`timeout`](Self::timeout) ends the call with, instead of
    /// UNAVAILABLE: `Code::DeadlineExceeded`, say.
    pub fn timeout_code(mut self, code: Code) -> Self {
        self.timeout_code = code;
        self
    }

    /// The status of a check that did not finish within `limit`; out of
    /// line, as it happens once per call at most.
    #[cold]
    #[inline(never)]
    fn timed_out(&self, limit: Duration) -> Status {
        let limit = humantime::format_duration(limit);
        Status::new(self.timeout_code, format!("check `{}` did not finish within {limit}", self.name))
    }
}

impl<F> fmt::Debug for AsyncCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCheck")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("timeout_code", &self.timeout_code)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> Interceptor for AsyncCheck<F>
where
    F: Fn(&CallContext, &MetadataMap) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    type Call = ();
    type Stream = ();
    // No message hooks: the wrappers count each message themselves.
    const __MESSAGE_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        self.name
    }

    fn before_handler(
        &self,
        _: &(),
        ctx: &CallContext,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let check = (self.check)(ctx, metadata);
        async move {
            let Some(limit) = self.timeout else { return check.await };
            match tokio::time::timeout(limit, check).await {
                Ok(checked) => checked,
                Err(_elapsed) => Err(self.timed_out(limit)),
            }
        }
    }
}
