//! The one trait every interceptor implements, built in or written by a user,
//! and the static composition of several of them.

use std::{
    future::{poll_fn, Future},
    pin::pin,
    task::{Context, Poll},
};

use tonic::{metadata::MetadataMap, Status};

use crate::engine::{
    panic::{self, blaming},
    type_name_of, CallContext,
};

/// Which way a message travels, seen from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the handler (the request stream).
    Inbound,
    /// From the handler to the client (the response stream).
    Outbound,
}

impl Direction {
    /// `"recv"` or `"send"`, as used in status messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "recv",
            Direction::Outbound => "send",
        }
    }
}

/// One message passing through the interceptors.
#[derive(Debug)]
pub struct MessageRef<'a, M> {
    pub(crate) ctx: &'a CallContext,
    pub(crate) direction: Direction,
    pub(crate) message: &'a M,
    pub(crate) encoded_len: usize,
    pub(crate) index: u64,
    pub(crate) bytes_before: u64,
}

impl<'a, M> MessageRef<'a, M> {
    /// The typed message. Downcast with `(msg.message() as &dyn Any)` to
    /// inspect one type from a generic hook.
    pub fn message(&self) -> &'a M {
        self.message
    }
    /// Which way it travels.
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// `prost::Message::encoded_len`, computed once per message.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }
    /// 0 for the first message of this direction, 1 for the next ...
    pub fn index(&self) -> u64 {
        self.index
    }
    /// The encoded bytes of the messages of this direction that passed
    /// before this one.
    pub fn bytes_before(&self) -> u64 {
        self.bytes_before
    }
    /// The call this message belongs to.
    pub fn call(&self) -> &'a CallContext {
        self.ctx
    }

    /// The message as a `T`, when it is one: a generic hook's way to look at
    /// the messages of one type.
    pub fn downcast<T: 'static>(&self) -> Option<&'a T>
    where
        M: 'static,
    {
        (self.message as &dyn std::any::Any).downcast_ref()
    }
}

/// A message-level interceptor for tonic calls.
///
/// # The least to write
/// Every item but the two state types has a default: stable Rust has no
/// defaults for associated types, so an interceptor that keeps no state
/// writes `type Call = (); type Stream = ();`, then only the hook it needs.
/// A stateless metadata check is the two type lines, `name` and `on_start`:
///
/// ```
/// use interceptor_runtime::{CallContext, Interceptor};
/// use tonic::{metadata::MetadataMap, Status};
///
/// struct RequireTenant;
///
/// impl Interceptor for RequireTenant {
///     type Call = ();   // no per-call state
///     type Stream = (); // no per-direction state
///     fn name(&self) -> &'static str {
///         "require_tenant"
///     }
///     fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
///         match metadata.get("x-tenant") {
///             Some(_) => Ok(()),
///             None => Err(Status::invalid_argument("missing `x-tenant` metadata")),
///         }
///     }
/// }
/// ```
///
/// Shorter still, with no type of your own: [`check_metadata`](crate::check_metadata)
/// (a closure for `on_start`), [`validate`](crate::validate) (a closure for
/// the messages of one type) and [`check_async`](crate::check_async) (an
/// async closure awaited before the handler, with a timeout).
///
/// The defaults: `name` is the type's name (`RequireTenant`); `on_start`
/// and `on_stream` make `Default` states; [`before_handler`](Self::before_handler)
/// is ready at once; every other hook lets everything pass. So the state
/// types must implement `Default` (a `derive` does), also where `on_start`
/// and `on_stream` are written.
///
/// # The life of one call
/// The hooks run in this order:
/// 1. [`on_start`](Self::on_start) before the handler runs: sees the method,
///    peer, RPC kind and request metadata, may reject the call with any
///    [`Status`], and returns the per-call state [`Self::Call`].
/// 2. [`before_handler`](Self::before_handler), once every interceptor's
///    `on_start` passed: an asynchronous check (a token introspection, a
///    quota lookup), awaited before the handler runs; may reject the call.
/// 3. [`on_stream`](Self::on_stream) once per direction, returning the state
///    that direction owns alone ([`Self::Stream`]): no lock is needed for it.
///    The outbound direction's is made when the handler starts, as the
///    handler's timers run with it (below).
/// 4. [`poll_message`](Self::poll_message) (or the simpler
///    [`on_message`](Self::on_message)) for every message in each direction,
///    before the handler or the client gets it: may wait, may reject; then
///    [`on_delivered`](Self::on_delivered) once every interceptor let it pass.
///    [`poll_interrupt`](Self::poll_interrupt) when a direction starts, while
///    it is idle or held back, and when a timer it registered fires; also while the
///    handler runs, so that a timer ends a handler that is neither reading
///    nor writing (a unary one, say): its future is dropped.
/// 5. [`on_end`](Self::on_end) exactly once, with the final status and stats.
///
/// A rejection ends the whole call with that status: the handler sees it on
/// its inbound stream and the client receives it as the final status.
///
/// A hook that panics is caught: the panic is logged (a `tracing` ERROR
/// naming the method, the interceptor and the hook), the call ends with
/// INTERNAL, and every interceptor that started still hears `on_end`. A
/// panic in `on_end` is logged and the others' `on_end` still run; the call's
/// outcome, set before, stands.
///
/// Interceptors are built once per method and shared by all its calls, so
/// `&self` state (a shared limiter, a counter) is per method.
///
/// A call's state (its [`CallContext`], every interceptor's [`Self::Call`] and
/// both directions' [`Self::Stream`]) is one allocation, made when the call
/// starts; keep the per-call and per-stream types small, and box what is
/// rarely needed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an interceptor",
    label = "`with = ..` takes a value whose type implements `interceptor_runtime::Interceptor`",
    note = "implement `interceptor_runtime::Interceptor` for `{Self}`"
)]
pub trait Interceptor: Send + Sync + 'static {
    /// State of one call, shared by both directions: `()` for none.
    type Call: Default + Send + Sync + 'static;
    /// State of one direction of one call: `()` for none.
    type Stream: Default + Send + 'static;

    /// `false` only where `poll_message` and `on_delivered` are the defaults
    /// and `on_message` too: the wrappers then count each message without
    /// calling the hooks (the default
    /// [`__unseen_allowance`](Self::__unseen_allowance) lets every message
    /// pass unseen). Not meant to be written by hand (`()` and [`Chain`]
    /// do).
    #[doc(hidden)]
    const __MESSAGE_HOOKS: bool = true;

    /// How many of a direction's next messages may pass without this
    /// interceptor's message hooks (`poll_message`, `on_delivered`) being
    /// called: the wrapper counts them, and a hook called later sees their
    /// count in its message's `index` and `bytes_before`. `index` and
    /// `bytes` are the direction's counts so far; no message passed unseen is
    /// larger than 64 KiB. Asked after each message the hooks passed; the
    /// default is none, or all without message hooks. Not meant to be
    /// written by hand (the built-in interceptors do).
    #[doc(hidden)]
    #[inline]
    fn __unseen_allowance(&self, call: &Self::Call, stream: &Self::Stream, index: u64, bytes: u64) -> u64 {
        let _ = (call, stream, index, bytes);
        if Self::__MESSAGE_HOOKS {
            0
        } else {
            u64::MAX
        }
    }

    /// `count` of the direction's next messages pass unseen (at most what
    /// [`__unseen_allowance`](Self::__unseen_allowance) allowed), or, when
    /// negative, that many of those did not come after all: the
    /// interceptor spends, or gets back, what it would have for them. Not
    /// meant to be written by hand.
    #[doc(hidden)]
    #[inline]
    // mutants: equivalent because the default does nothing already
    // (`.cargo/mutants.toml`).
    fn __spend_unseen(&self, stream: &mut Self::Stream, count: i64) {
        let _ = (stream, count);
    }

    /// A short name, in `snake_case` by convention: recorded as the
    /// interceptor that ended a call it rejects (`Outcome::ended_by`, the
    /// stats' `ended_by`), and named in the log of a panic of its hooks. The
    /// default is the type's name, without its path and generics.
    fn name(&self) -> &'static str {
        type_name_of::<Self>()
    }

    /// Runs before the handler. `Err` rejects the call; the handler never
    /// runs. The default makes a `Default` call state.
    fn on_start(&self, call: &CallContext, metadata: &MetadataMap) -> Result<Self::Call, Status> {
        let _ = (call, metadata);
        Ok(Self::Call::default())
    }

    /// An asynchronous check, awaited before the handler runs: a token
    /// introspection, a quota lookup, anything that waits for a service.
    /// `Err` rejects the call: the handler never runs, the client gets the
    /// status, and the call ends with it (`ended_by` this interceptor).
    ///
    /// It runs once every interceptor's [`on_start`](Self::on_start) has
    /// passed, so every interceptor has started and hears
    /// [`on_end`](Self::on_end) however the check ends; the interceptors'
    /// checks run in the order they are written, each once the one before
    /// it passed. If the client goes away while a check is pending, the
    /// server drops the handler's future, and the check's future with it:
    /// the call ends CANCELLED. A panic, in this method or while its future
    /// is polled, is caught like any hook's: the call ends INTERNAL.
    ///
    /// A time limit is the check's own: wrap the future in
    /// `tokio::time::timeout`, or use [`check_async`](crate::check_async)'s
    /// `timeout`. A call whose client was gone before it started skips the
    /// checks (its handler sees CANCELLED first).
    ///
    /// May be written `async fn before_handler(..) -> Result<(), Status>`.
    /// The default is ready at once, and costs nothing measurable.
    fn before_handler(
        &self,
        call: &Self::Call,
        ctx: &CallContext,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (call, ctx, metadata);
        std::future::ready(Ok(()))
    }

    /// Creates the state of one direction. The default makes a `Default`
    /// one.
    fn on_stream(&self, call: &Self::Call, ctx: &CallContext, direction: Direction) -> Self::Stream {
        let _ = (call, ctx, direction);
        Self::Stream::default()
    }

    /// Checks one message synchronously. The default lets it pass.
    #[inline]
    fn on_message<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        let _ = (call, stream, msg);
        Ok(())
    }

    /// Checks one message, possibly waiting. Returning `Pending` holds the
    /// message back (and, inbound, pushes back on the client through HTTP/2
    /// flow control); the hook is polled again with the same message until it
    /// is `Ready`. The default calls [`on_message`](Self::on_message).
    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        let _ = cx;
        Poll::Ready(self.on_message(call, stream, msg))
    }

    /// Called once a message has passed every interceptor of the call, just
    /// before the handler or the client gets it: where an observer counts
    /// what was actually delivered. The default does nothing.
    #[inline]
    fn on_delivered<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        msg: &MessageRef<'_, M>,
    ) {
        let _ = (call, stream, msg);
    }

    /// Where timers are polled; `Ready(status)` ends the call with that status
    /// (a timer that fired, say). The default never fires.
    ///
    /// It is polled once when each direction starts (so a timer is
    /// registered even on a stream that never waits), whenever a direction
    /// finds no message ready or an interceptor holds its message back, and
    /// before the next message of each direction once a timer registered
    /// here has fired. While the handler runs, it is
    /// polled with the outbound direction's state whenever the handler waits
    /// (once, and again after a timer fired): `Ready` then drops the handler's
    /// future, and the call ends with the status. `cx`'s waker belongs to the
    /// whole call, not to one direction: a timer kept in [`Self::Call`] and
    /// polled here by either direction interrupts both, busy or waiting. The
    /// waker holds the call weakly, so such a timer does not keep the call
    /// alive.
    fn poll_interrupt(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        ctx: &CallContext,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        let _ = (call, stream, ctx, cx);
        Poll::Pending
    }

    /// Runs exactly once when the call is over; `ctx.outcome()` is set.
    fn on_end(&self, call: &Self::Call, ctx: &CallContext) {
        let _ = (call, ctx);
    }

    /// The name of the interceptor whose `hook` (`poll_message` or
    /// `on_delivered`) panicked, told from the direction's state after the
    /// panic: this one's unless it is made of several ([`Chain`]). Not meant
    /// to be written by hand.
    #[doc(hidden)]
    fn __message_hook_owner(&self, stream: &Self::Stream, hook: &'static str) -> &'static str {
        let _ = (stream, hook);
        panic::name_of(self)
    }
}

/// No interceptor: lets everything pass.
impl Interceptor for () {
    type Call = ();
    type Stream = ();
    const __MESSAGE_HOOKS: bool = false;
    fn name(&self) -> &'static str {
        "none"
    }
}

/// One interceptor shared: an `Arc<I>` runs `I`, so that one instance, and
/// whatever `&self` state it keeps (a limiter, a count), serves several
/// methods or services: `#[intercept(with = SHARED.clone())]` on each.
///
/// ```
/// use std::sync::{Arc, LazyLock};
/// use interceptor_runtime::rate::{Rate, RateConfig};
///
/// // One limit of 100 messages a second for the calls of two services.
/// static SHARED: LazyLock<Arc<Rate>> =
///     LazyLock::new(|| Arc::new(Rate::new(RateConfig { recv: Some(100), ..Default::default() })));
/// let for_one = SHARED.clone();
/// let for_the_other = SHARED.clone();
/// # let _ = (for_one, for_the_other);
/// ```
impl<I: Interceptor> Interceptor for std::sync::Arc<I> {
    type Call = I::Call;
    type Stream = I::Stream;
    const __MESSAGE_HOOKS: bool = I::__MESSAGE_HOOKS;

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<Self::Call, Status> {
        (**self).on_start(ctx, metadata)
    }

    fn before_handler(
        &self,
        call: &Self::Call,
        ctx: &CallContext,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        (**self).before_handler(call, ctx, metadata)
    }

    fn on_stream(&self, call: &Self::Call, ctx: &CallContext, direction: Direction) -> Self::Stream {
        (**self).on_stream(call, ctx, direction)
    }

    #[inline]
    fn on_message<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        (**self).on_message(call, stream, msg)
    }

    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        (**self).poll_message(call, stream, cx, msg)
    }

    #[inline]
    fn on_delivered<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        msg: &MessageRef<'_, M>,
    ) {
        (**self).on_delivered(call, stream, msg)
    }

    fn poll_interrupt(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        ctx: &CallContext,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        (**self).poll_interrupt(call, stream, ctx, cx)
    }

    fn on_end(&self, call: &Self::Call, ctx: &CallContext) {
        (**self).on_end(call, ctx)
    }

    fn __message_hook_owner(&self, stream: &Self::Stream, hook: &'static str) -> &'static str {
        (**self).__message_hook_owner(stream, hook)
    }

    #[inline]
    fn __unseen_allowance(&self, call: &Self::Call, stream: &Self::Stream, index: u64, bytes: u64) -> u64 {
        (**self).__unseen_allowance(call, stream, index, bytes)
    }

    #[inline]
    fn __spend_unseen(&self, stream: &mut Self::Stream, count: i64) {
        (**self).__spend_unseen(stream, count)
    }
}

/// Checks, where the user wrote `with = expr`, that `expr` is an interceptor
/// (the expansion calls it, through `__private`).
#[inline]
pub fn interceptor<I: Interceptor>(interceptor: I) -> I {
    interceptor
}

/// Records `name` as the interceptor that ended the call; out of line, as it
/// happens once per call at most.
#[cold]
#[inline(never)]
fn rejected_by(ctx: &CallContext, name: &'static str, status: Status) -> Status {
    ctx.mark_ended_by(name);
    status
}

/// Two interceptors run in order: `A` first, then `B`, for every hook but
/// [`Interceptor::on_end`], which runs `B` first (like unwinding a stack).
///
/// Nested, `Chain` composes any number statically: no boxing per message.
///
/// A link that panics is named in the log of the panic, which the engine
/// catches. A panic in `on_start` is caught here, and ends the links that
/// had started; one in `on_end`, so that the other links are still ended.
#[derive(Clone, Debug, Default)]
pub struct Chain<A, B> {
    first: A,
    second: B,
}

impl<A, B> Chain<A, B> {
    /// `first` runs before `second`.
    pub fn new(first: A, second: B) -> Self {
        Chain { first, second }
    }
}

/// The per-direction state of a [`Chain`].
#[derive(Debug, Default)]
pub struct ChainStream<A, B> {
    first: A,
    second: B,
    /// Which link has the current message. A message hook that panics is
    /// told from it (`__message_hook_owner`): a byte written per step
    /// instead of a guard per hook call. An enum, not a `u8`, so that the
    /// engine's `Option` of the state takes no room of its own.
    phase: Phase,
}

/// [`ChainStream::phase`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// The first link has the message.
    #[default]
    First,
    /// The first link let the message pass; the second has it (only the
    /// second is polled again).
    Second,
    /// The second link hears `on_delivered`.
    SecondDelivered,
}

impl<A: Interceptor, B: Interceptor> Interceptor for Chain<A, B> {
    type Call = (A::Call, B::Call);
    type Stream = ChainStream<A::Stream, B::Stream>;
    const __MESSAGE_HOOKS: bool = A::__MESSAGE_HOOKS || B::__MESSAGE_HOOKS;

    fn name(&self) -> &'static str {
        "chain"
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<Self::Call, Status> {
        let first = start_link(&self.first, ctx, metadata)?;
        match start_link(&self.second, ctx, metadata) {
            Ok(second) => Ok((first, second)),
            Err(status) => {
                // The first one started: it hears how the call ended.
                ctx.set_outcome(&Err(status.clone()));
                end_link(&self.first, &first, ctx);
                Err(status)
            }
        }
    }

    /// `A`'s check, then, once it passed, `B`'s.
    async fn before_handler(&self, call: &Self::Call, ctx: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        check_link(&self.first, &call.0, ctx, metadata).await?;
        check_link(&self.second, &call.1, ctx, metadata).await
    }

    fn on_stream(&self, call: &Self::Call, ctx: &CallContext, direction: Direction) -> Self::Stream {
        ChainStream {
            first: blaming(ctx, &self.first, "on_stream", || self.first.on_stream(&call.0, ctx, direction)),
            second: blaming(ctx, &self.second, "on_stream", || self.second.on_stream(&call.1, ctx, direction)),
            phase: Phase::First,
        }
    }

    // The message hooks leave no `Blame` on the links (its fields would be
    // written to the stack for every hook call of every message): the
    // phase says which link has the message, and so which one panicked.
    #[inline(always)]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        if stream.phase != Phase::Second {
            match self.first.poll_message(&call.0, &mut stream.first, cx, msg) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(status)) => return Poll::Ready(Err(rejected_by(msg.ctx, self.first.name(), status))),
                Poll::Ready(Ok(())) => stream.phase = Phase::Second,
            }
        }
        let result = match self.second.poll_message(&call.1, &mut stream.second, cx, msg) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        stream.phase = Phase::First;
        match result {
            Ok(()) => Poll::Ready(Ok(())),
            Err(status) => Poll::Ready(Err(rejected_by(msg.ctx, self.second.name(), status))),
        }
    }

    #[inline]
    fn on_delivered<M: prost::Message + 'static>(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        msg: &MessageRef<'_, M>,
    ) {
        self.first.on_delivered(&call.0, &mut stream.first, msg);
        stream.phase = Phase::SecondDelivered;
        self.second.on_delivered(&call.1, &mut stream.second, msg);
        stream.phase = Phase::First;
    }

    /// As many as both links allow.
    #[inline]
    fn __unseen_allowance(&self, call: &Self::Call, stream: &Self::Stream, index: u64, bytes: u64) -> u64 {
        let first = self.first.__unseen_allowance(&call.0, &stream.first, index, bytes);
        if first == 0 {
            return 0;
        }
        first.min(self.second.__unseen_allowance(&call.1, &stream.second, index, bytes))
    }

    #[inline]
    fn __spend_unseen(&self, stream: &mut Self::Stream, count: i64) {
        self.first.__spend_unseen(&mut stream.first, count);
        self.second.__spend_unseen(&mut stream.second, count);
    }

    fn __message_hook_owner(&self, stream: &Self::Stream, hook: &'static str) -> &'static str {
        let second = match hook {
            "on_delivered" => stream.phase == Phase::SecondDelivered,
            _ => stream.phase == Phase::Second,
        };
        if second {
            self.second.__message_hook_owner(&stream.second, hook)
        } else {
            self.first.__message_hook_owner(&stream.first, hook)
        }
    }

    fn poll_interrupt(
        &self,
        call: &Self::Call,
        stream: &mut Self::Stream,
        ctx: &CallContext,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        let (first, second) = (&mut stream.first, &mut stream.second);
        let polled = blaming(ctx, &self.first, "poll_interrupt", || self.first.poll_interrupt(&call.0, first, ctx, cx));
        if let Poll::Ready(status) = polled {
            ctx.mark_ended_by(self.first.name());
            return Poll::Ready(status);
        }
        let polled =
            blaming(ctx, &self.second, "poll_interrupt", || self.second.poll_interrupt(&call.1, second, ctx, cx));
        let status = std::task::ready!(polled);
        ctx.mark_ended_by(self.second.name());
        Poll::Ready(status)
    }

    fn on_end(&self, call: &Self::Call, ctx: &CallContext) {
        end_link(&self.second, &call.1, ctx);
        end_link(&self.first, &call.0, ctx);
    }
}

/// Starts one link of a [`Chain`]. Its rejection, or its panic (caught,
/// logged, INTERNAL), names it as the interceptor that ended the call.
fn start_link<A: Interceptor>(link: &A, ctx: &CallContext, metadata: &MetadataMap) -> Result<A::Call, Status> {
    let started = panic::catch(|| link.on_start(ctx, metadata))
        .unwrap_or_else(|payload| Err(panic::caught_in_hook(ctx, link, "on_start", payload)));
    started.inspect_err(|_| ctx.mark_ended_by(panic::name_of(link)))
}

/// Awaits one link's [`Interceptor::before_handler`]. Its rejection names
/// it as the interceptor that ended the call; a blame is left on it while
/// its check is made and polled, so that a panic names it (the engine
/// catches it).
async fn check_link<A: Interceptor>(
    link: &A,
    call: &A::Call,
    ctx: &CallContext,
    metadata: &MetadataMap,
) -> Result<(), Status> {
    const HOOK: &str = "before_handler";
    let mut check = pin!(blaming(ctx, link, HOOK, || link.before_handler(call, ctx, metadata)));
    let checked = poll_fn(|cx| blaming(ctx, link, HOOK, || check.as_mut().poll(cx))).await;
    checked.inspect_err(|_| ctx.mark_ended_by(panic::name_of(link)))
}

/// Ends one link of a [`Chain`]; its panic is caught and logged, so that the
/// links before it are ended too.
fn end_link<A: Interceptor>(link: &A, call: &A::Call, ctx: &CallContext) {
    if let Err(payload) = panic::catch(|| link.on_end(call, ctx)) {
        let _ = panic::caught_in_hook(ctx, link, "on_end", payload);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::RpcKind;

    /// Logs every hook as `name:hook`; `pending` makes its message hook wait
    /// once, `reject_start` makes `on_start` fail, `panic_delivered` makes
    /// `on_delivered` panic.
    struct Log {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        pending: bool,
        reject_start: bool,
        panic_delivered: bool,
    }

    impl Log {
        fn new(name: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Self {
            Log { name, log: log.clone(), pending: false, reject_start: false, panic_delivered: false }
        }
        fn push(&self, hook: &str) {
            self.log.lock().unwrap().push(format!("{}:{hook}", self.name));
        }
    }

    impl Interceptor for Log {
        type Call = ();
        type Stream = bool;
        fn name(&self) -> &'static str {
            self.name
        }
        fn on_start(&self, _: &CallContext, _: &MetadataMap) -> Result<(), Status> {
            self.push("start");
            if self.reject_start {
                return Err(Status::unauthenticated("no"));
            }
            Ok(())
        }
        fn on_stream(&self, _: &(), _: &CallContext, _: Direction) -> bool {
            self.pending
        }
        fn poll_message<M: prost::Message + 'static>(
            &self,
            _: &(),
            waits: &mut bool,
            _: &mut Context<'_>,
            _: &MessageRef<'_, M>,
        ) -> Poll<Result<(), Status>> {
            self.push("message");
            if std::mem::take(waits) {
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }
        fn on_delivered<M: prost::Message + 'static>(&self, _: &(), _: &mut bool, _: &MessageRef<'_, M>) {
            assert!(!self.panic_delivered, "{} panics in on_delivered", self.name);
        }
        fn on_end(&self, _: &(), ctx: &CallContext) {
            self.push(&format!("end {:?}", ctx.outcome().map(|o| o.code)));
        }
    }

    #[test]
    fn the_link_that_has_the_message_is_told_from_the_state() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let owner = |panics: Option<&str>, waits: &str| {
            let link = |name| {
                let mut link = Log::new(name, &log);
                link.pending = name == waits;
                link.panic_delivered = Some(name) == panics;
                link
            };
            let chain = Chain::new(link("a"), Chain::new(link("b"), link("c")));
            let ctx = ctx();
            let call = chain.on_start(&ctx, &MetadataMap::new()).unwrap();
            let mut stream = chain.on_stream(&call, &ctx, Direction::Inbound);
            let msg = message(&ctx);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut polled = chain.poll_message(&call, &mut stream, &mut cx, &msg);
            let waiting = chain.__message_hook_owner(&stream, "poll_message");
            while polled.is_pending() {
                polled = chain.poll_message(&call, &mut stream, &mut cx, &msg);
            }
            assert!(matches!(polled, Poll::Ready(Ok(()))));
            let next = chain.__message_hook_owner(&stream, "poll_message");
            let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                chain.on_delivered(&call, &mut stream, &msg);
            }));
            assert_eq!(delivered.is_err(), panics.is_some());
            (waiting, next, chain.__message_hook_owner(&stream, "on_delivered"))
        };
        // The one that waits has the message until it passes; then the
        // first has the next one.
        assert_eq!(owner(None, "a"), ("a", "a", "a"));
        assert_eq!(owner(None, "b"), ("b", "a", "a"));
        assert_eq!(owner(None, "c"), ("c", "a", "a"));
        // The one whose `on_delivered` panicked.
        assert_eq!(owner(Some("a"), ""), ("a", "a", "a"));
        assert_eq!(owner(Some("b"), ""), ("a", "a", "b"));
        assert_eq!(owner(Some("c"), ""), ("a", "a", "c"));
    }

    fn ctx() -> CallContext {
        crate::engine::test_context(RpcKind::Bidi)
    }

    /// The first message of the inbound direction, `()`.
    fn message(ctx: &CallContext) -> MessageRef<'_, ()> {
        MessageRef { ctx, direction: Direction::Inbound, message: &(), encoded_len: 0, index: 0, bytes_before: 0 }
    }

    #[test]
    fn hooks_run_in_the_order_written_and_end_unwinds() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut second = Log::new("b", &log);
        second.pending = true;
        let chain = Chain::new(Log::new("a", &log), second);
        let ctx = ctx();
        let call = chain.on_start(&ctx, &MetadataMap::new()).unwrap();
        let mut stream = chain.on_stream(&call, &ctx, Direction::Inbound);
        let msg = message(&ctx);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(chain.poll_message(&call, &mut stream, &mut cx, &msg).is_pending());
        // Polled again, only the one that waited runs again.
        assert!(matches!(chain.poll_message(&call, &mut stream, &mut cx, &msg), Poll::Ready(Ok(()))));
        ctx.set_outcome(&Ok(()));
        chain.on_end(&call, &ctx);
        assert_eq!(
            *log.lock().unwrap(),
            ["a:start", "b:start", "a:message", "b:message", "b:message", "b:end Some(Ok)", "a:end Some(Ok)"]
        );
    }

    #[test]
    fn a_rejected_start_ends_the_ones_that_started() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut second = Log::new("b", &log);
        second.reject_start = true;
        let chain = Chain::new(Log::new("a", &log), Chain::new(second, Log::new("c", &log)));
        let ctx = ctx();
        let status = chain.on_start(&ctx, &MetadataMap::new()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(*log.lock().unwrap(), ["a:start", "b:start", "a:end Some(Unauthenticated)"]);
        assert_eq!(ctx.outcome().unwrap().ended_by, Some("b"));
    }
}
