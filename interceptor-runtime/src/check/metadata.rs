//! [`check_metadata`]: a stateless `on_start` from a closure.

use std::fmt;

use tonic::{metadata::MetadataMap, Status};

use crate::{engine::CallContext, interceptor::Interceptor};

/// An interceptor that checks each call's request metadata with `check`
/// before the handler runs; `Err` rejects the call with that status, and the
/// handler never runs. Named `check_metadata` unless [`named`](MetadataCheck::named).
///
/// ```
/// use interceptor_runtime::check_metadata;
/// use tonic::Status;
///
/// let tenant = check_metadata(|_ctx, metadata| match metadata.get("x-tenant") {
///     Some(_) => Ok(()),
///     None => Err(Status::invalid_argument("missing `x-tenant` metadata")),
/// })
/// .named("tenant");
/// # let _ = tenant;
/// ```
pub fn check_metadata<F>(check: F) -> MetadataCheck<F>
where
    F: Fn(&CallContext, &MetadataMap) -> Result<(), Status> + Send + Sync + 'static,
{
    MetadataCheck { check, name: "check_metadata" }
}

/// What [`check_metadata`] makes.
#[derive(Clone)]
pub struct MetadataCheck<F> {
    check: F,
    name: &'static str,
}

impl<F> MetadataCheck<F> {
    /// Names the check: the interceptor that ended a call it rejects.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

impl<F> fmt::Debug for MetadataCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataCheck").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<F> Interceptor for MetadataCheck<F>
where
    F: Fn(&CallContext, &MetadataMap) -> Result<(), Status> + Send + Sync + 'static,
{
    type Call = ();
    type Stream = ();
    // No message hooks: the wrappers count each message themselves.
    const __MESSAGE_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        self.name
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        (self.check)(ctx, metadata)
    }
}
