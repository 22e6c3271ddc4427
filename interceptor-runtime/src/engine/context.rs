//! What one call is: its method, peer, live counters, cancellation and, once
//! it is over, its outcome. Shared by the inbound and outbound wrappers, the
//! interceptors and the handler.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::Arc,
    task::Waker,
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    flag,
    sync::{
        fence, AtomicU16, AtomicU8, AtomicWaker, OnceBox, OnceLock,
        Ordering::{Acquire, Relaxed, Release, SeqCst},
    },
    CallStats, Counters, ErasedMethod, MethodInfo, Outcome,
};
use crate::{interceptor::Direction, transport::Tap};

/// An `Instant` as signed nanoseconds from a process-wide origin: 8 bytes,
/// where tokio's `Instant` takes 16. Exact both ways, and signed because a
/// paused test clock may stand before the origin.
#[derive(Clone, Copy)]
struct Started(i64);

impl Started {
    fn origin() -> std::time::Instant {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(std::time::Instant::now)
    }

    fn now() -> Self {
        let (at, origin) = (Instant::now().into_std(), Self::origin());
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(origin) {
            Some(after) => Started(nanos(after)),
            None => Started(-nanos(origin - at)),
        }
    }

    fn get(self) -> Instant {
        let offset = Duration::from_nanos(self.0.unsigned_abs());
        let origin = Self::origin();
        Instant::from_std(if self.0 >= 0 { origin + offset } else { origin - offset })
    }
}

/// The largest message (its `encoded_len`) that may pass unseen: a larger
/// one always goes through the interceptors, so that one that limits bytes
/// can let `n` messages pass unseen while `n` times this fits in what is
/// left, and one that looks at sizes need not see the smaller ones.
pub(crate) const UNSEEN_MAX_LEN: usize = 64 * 1024;

/// One call, as seen by the interceptors and the handler.
///
/// Reach it from the handler body through the request's extensions:
/// `CallContext::of(&request)`; it stays valid after the call has ended.
///
/// It lives in the same allocation as the rest of the call's state (the
/// interceptors' per-call and per-direction state), and what is only needed
/// once the call ends or is asked for (its status, outcome and cancellation
/// token) is allocated then.
//
// Layout: the two directions' counters are at either end, 112 bytes apart,
// so that they never share a cache line. The flags and both directions'
// unseen counts are next to the inbound counters: a bidi call whose two
// directions run on two cores (a handler that reads its stream in a task of
// its own) writes that line from both. Moving the outbound count next to its
// counters measured within the noise on 2 cores (`relay` in
// `benches/benches/scaling.rs`) and costs 8 bytes per call, so it stays.
#[repr(C)]
pub struct CallContext {
    recv: Counters,
    pub(crate) flags: AtomicU8,
    /// Per direction (inbound, outbound): how many of its next messages may
    /// pass without the interceptors seeing them, counted by the wrapper
    /// alone (see [`UNSEEN_MAX_LEN`]). Read and written by the direction's
    /// owner only (I1), as its counters are; in what would be the flags'
    /// padding.
    unseen: [AtomicU16; 2],
    /// The `Method<I>` that started the call (I5).
    pub(super) method: ErasedMethod,
    peer: Peer,
    /// What [`InterceptLayer`](crate::InterceptLayer) sees of the call below
    /// tonic, when the server has it: read when the request stream ends and
    /// when the call's result is final, never per message.
    tap: Option<Arc<Tap>>,
    /// An `Instant` in 8 bytes (see [`Started`]).
    started: Started,
    wakers: [AtomicWaker; 2],
    cold: OnceBox<Cold>,
    sent: Counters,
}

/// The client's address in 24 bytes, where an `Option<SocketAddr>` takes
/// 32: every call has one. An IPv6 address's flow label (`flowinfo`) is not
/// kept: it is 0 on a TCP connection unless the socket asks for the labels
/// (`IPV6_FLOWINFO`), which tonic's does not.
#[derive(Clone, Copy)]
struct Peer {
    /// The IPv4 address in the first four bytes, or the IPv6 one.
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
    /// 0: none; 4 or 6: the IP version.
    version: u8,
}

impl Peer {
    fn new(addr: Option<SocketAddr>) -> Self {
        let mut peer = Peer { ip: [0; 16], scope_id: 0, port: 0, version: 0 };
        match addr {
            None => {}
            Some(SocketAddr::V4(addr)) => {
                peer.ip[..4].copy_from_slice(&addr.ip().octets());
                (peer.port, peer.version) = (addr.port(), 4);
            }
            Some(SocketAddr::V6(addr)) => {
                peer.ip = addr.ip().octets();
                (peer.scope_id, peer.port, peer.version) = (addr.scope_id(), addr.port(), 6);
            }
        }
        peer
    }

    fn get(self) -> Option<SocketAddr> {
        match self.version {
            4 => {
                let [a, b, c, d, ..] = self.ip;
                Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), self.port)))
            }
            6 => Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.ip), self.port, 0, self.scope_id))),
            _ => None,
        }
    }
}

/// What a call needs only once it ends, or when asked.
#[derive(Default)]
struct Cold {
    /// Made when the handler first asks for it.
    cancel: OnceLock<CancellationToken>,
    /// Set when an interceptor ends the call: both directions end with it.
    terminal: OnceLock<Status>,
    ended_by: OnceLock<&'static str>,
    outcome: OnceLock<Outcome>,
    /// The interceptor and hook a caught panic came from, noted by a
    /// `Chain`'s blame on the way out (see `engine::panic`).
    blamed: OnceLock<(&'static str, &'static str)>,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("method", &self.method().full_name)
            .field("peer", &self.peer())
            .field("stats", &self.stats())
            .field("outcome", &self.outcome())
            .finish_non_exhaustive()
    }
}

impl CallContext {
    pub(crate) fn new(method: ErasedMethod, peer: Option<SocketAddr>, tap: Option<Arc<Tap>>) -> Self {
        CallContext {
            recv: Counters::default(),
            // Each direction polls the interceptors' timers once when it starts.
            flags: AtomicU8::new(flag::INTERRUPT_IN | flag::INTERRUPT_OUT),
            // The interceptors see each direction's first message.
            unseen: [AtomicU16::new(0), AtomicU16::new(0)],
            method,
            peer: Peer::new(peer),
            tap,
            started: Started::now(),
            wakers: [AtomicWaker::new(), AtomicWaker::new()],
            cold: OnceBox::new(),
            sent: Counters::default(),
        }
    }

    /// The context of the call a request belongs to, when the handler is
    /// intercepted.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<CallRef> {
        request.extensions().get::<CallExtension>().map(|h| h.0.clone())
    }

    /// The method.
    pub fn method(&self) -> &'static MethodInfo {
        self.method.info()
    }

    /// The client's address, when the transport knows it. An IPv6
    /// address's flow label is not kept: it reads 0 (as it is on tonic's
    /// connections).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer.get()
    }

    /// When the call started (tokio's clock, so it follows a paused clock).
    pub fn started(&self) -> Instant {
        self.started.get()
    }

    /// Live counts.
    pub fn stats(&self) -> CallStats {
        CallStats {
            messages_received: self.recv.messages.load(Relaxed),
            bytes_received: self.recv.bytes.load(Relaxed),
            messages_sent: self.sent.messages.load(Relaxed),
            bytes_sent: self.sent.bytes.load(Relaxed),
        }
    }

    fn cold(&self) -> &Cold {
        self.cold.get_or_init(Default::default)
    }

    /// Fires when the call is over: the client went away, an interceptor
    /// ended it, or it finished. Work the handler spawned can stop on it.
    ///
    /// The token is made on the first call of this method.
    pub fn cancelled(&self) -> &CancellationToken {
        let token = self.cold().cancel.get_or_init(CancellationToken::new);
        // Pairs with the fence in `mark_over`: either the call's end sees
        // this token, or this sees the call's end.
        fence(SeqCst);
        if self.flags.load(Relaxed) & (flag::TERMINATED | flag::OVER) != 0 {
            token.cancel();
        }
        token
    }

    /// The final outcome, once the call is over.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.cold.get()?.outcome.get()
    }

    /// The status an interceptor ended the call with, if one did.
    #[inline]
    pub fn terminal_status(&self) -> Option<&Status> {
        if self.flags.load(Acquire) & flag::TERMINATED == 0 {
            return None;
        }
        self.cold.get()?.terminal.get()
    }

    #[inline]
    pub(crate) fn counters(&self, direction: Direction) -> &Counters {
        match direction {
            Direction::Inbound => &self.recv,
            Direction::Outbound => &self.sent,
        }
    }

    /// How many of `direction`'s next messages may pass unseen.
    #[inline]
    pub(crate) fn unseen(&self, direction: Direction) -> &AtomicU16 {
        &self.unseen[direction as usize]
    }

    /// The transport's view of the call, when [`InterceptLayer`](crate::InterceptLayer)
    /// is in the server.
    #[inline]
    pub(crate) fn tap(&self) -> Option<&Arc<Tap>> {
        self.tap.as_ref()
    }

    /// The CANCELLED status of a call whose request stream broke below tonic
    /// (the client reset it, or its connection was lost), when the layer
    /// saw it.
    pub(crate) fn request_failure(&self) -> Option<Status> {
        self.tap.as_ref()?.request_failure().cloned()
    }

    /// The status of a call whose handler or response stream was dropped
    /// before it ended: what the layer saw, if anything (the error status the
    /// response's end was sent with, which is what the client got; how the
    /// request broke; the client's deadline, past, which tonic's server drops
    /// a handler at), or else [`gone`](super::gone).
    pub(crate) fn gone_status(&self) -> Status {
        let Some(tap) = self.tap.as_ref() else { return super::gone() };
        tap.sent_error()
            .or_else(|| tap.request_failure().cloned())
            .or_else(|| tap.deadline_expired())
            .unwrap_or_else(super::gone)
    }

    /// Notes the interceptor and hook a panic is unwinding from; the
    /// innermost (first) note wins.
    pub(crate) fn blame(&self, interceptor: &'static str, hook: &'static str) {
        let _ = self.cold().blamed.set((interceptor, hook));
    }

    /// The interceptor [`blame`](Self::blame) noted for `hook`, if any.
    pub(crate) fn blamed(&self, hook: &'static str) -> Option<&'static str> {
        let (interceptor, noted) = self.cold.get()?.blamed.get().copied()?;
        (noted == hook).then_some(interceptor)
    }

    /// Records which interceptor ended the call; the first one named wins.
    pub(crate) fn mark_ended_by(&self, name: &'static str) {
        let _ = self.cold().ended_by.set(name);
    }

    /// Sets `bit` and cancels the token if the handler made one.
    fn mark_over(&self, bit: u8) {
        self.flags.fetch_or(bit, Release);
        fence(SeqCst);
        if let Some(token) = self.cold.get().and_then(|cold| cold.cancel.get()) {
            token.cancel();
        }
    }

    /// An interceptor ended the call: both directions end with `status`.
    pub(crate) fn terminate(&self, status: &Status) {
        if self.cold().terminal.set(status.clone()).is_ok() {
            self.mark_over(flag::TERMINATED);
            self.wake_both();
        }
    }

    /// Registers the waker of a direction that waits, so that [`terminate`](Self::terminate)
    /// and the call's timers wake it.
    #[inline]
    pub(crate) fn register(&self, direction: Direction, waker: &Waker) {
        self.wakers[direction as usize].register(waker);
    }

    /// A timer of the call fired: each direction polls the interceptors'
    /// timers before its next message, and a waiting one is woken.
    pub(crate) fn interrupt(&self) {
        self.flags.fetch_or(flag::INTERRUPT_IN | flag::INTERRUPT_OUT, Release);
        self.wake_both();
    }

    /// Wakes whichever direction waits.
    fn wake_both(&self) {
        for waker in &self.wakers {
            waker.wake();
        }
    }

    /// Sets the outcome; true the first time only.
    pub(crate) fn set_outcome(&self, result: &Result<(), Status>) -> bool {
        let cold = self.cold();
        if cold.outcome.get().is_some() {
            return false;
        }
        let (code, message) = match result {
            Ok(()) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        };
        let outcome = Outcome {
            code,
            message,
            ended_by: cold.ended_by.get().copied(),
            stats: self.stats(),
            duration: self.started().elapsed(),
        };
        let first = cold.outcome.set(outcome).is_ok();
        if first {
            self.mark_over(flag::OVER);
        }
        first
    }
}

/// A shared handle to a call's [`CallContext`]: what
/// [`CallContext::of`] returns. Cheap to clone, and valid after the call has
/// ended; it keeps the call's state (not its streams) alive.
#[derive(Clone)]
pub struct CallRef(pub(crate) Arc<dyn HasContext>);

impl std::ops::Deref for CallRef {
    type Target = CallContext;
    fn deref(&self) -> &CallContext {
        self.0.context()
    }
}

impl fmt::Debug for CallRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// What holds a [`CallContext`]: the call's whole state, or a context alone
/// (a call rejected before it started).
pub(crate) trait HasContext: Send + Sync {
    fn context(&self) -> &CallContext;
}

impl HasContext for CallContext {
    fn context(&self) -> &CallContext {
        self
    }
}

/// The request extension through which a handler reaches its call.
#[derive(Clone, Debug)]
pub(crate) struct CallExtension(pub(crate) CallRef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_reads_back_as_it_was_given() {
        for addr in ["127.0.0.1:50051", "[::1]:443", "[fe80::1%7]:8080", "255.255.255.255:65535", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(Peer::new(Some(addr)).get(), Some(addr));
        }
        assert_eq!(Peer::new(None).get(), None);
        assert_eq!(std::mem::size_of::<Peer>(), 24);
    }
}
