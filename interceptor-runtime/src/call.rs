//! What one call is: its method, peer, live counters, cancellation and, once
//! it is over, its outcome. Shared by the inbound and outbound wrappers, the
//! interceptors and the handler.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::Duration,
};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::interceptor::Direction;

/// The four kinds of gRPC method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    Bidi,
}

impl RpcKind {
    /// `unary`, `server_stream`, `client_stream` or `bidi_stream`: the
    /// `grpc_type` label of go-grpc-middleware's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RpcKind::Unary => "unary",
            RpcKind::ServerStreaming => "server_stream",
            RpcKind::ClientStreaming => "client_stream",
            RpcKind::Bidi => "bidi_stream",
        }
    }
}

/// The method an interceptor is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    /// Fully qualified service, e.g. `routeguide.RouteGuide`.
    pub service: &'static str,
    /// The method as the .proto spells it, e.g. `RouteChat`.
    pub method: &'static str,
    /// `/routeguide.RouteGuide/RouteChat`, the HTTP/2 path.
    pub full_name: &'static str,
    /// The RPC kind, read from the handler's signature.
    pub kind: RpcKind,
}

impl MethodInfo {
    /// Describes a method; the strings are leaked once per method.
    pub fn new(service: &str, method: &str, kind: RpcKind) -> Self {
        let full_name = format!("/{service}/{method}");
        MethodInfo {
            service: Box::leak(service.into()),
            method: Box::leak(method.into()),
            full_name: Box::leak(full_name.into_boxed_str()),
            kind,
        }
    }
}

/// Message and byte counts of one call so far (bytes are
/// `prost::Message::encoded_len`, without gRPC framing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Messages that reached the handler.
    pub messages_received: u64,
    /// Their encoded bytes.
    pub bytes_received: u64,
    /// Messages that went to the client.
    pub messages_sent: u64,
    /// Their encoded bytes.
    pub bytes_sent: u64,
}

/// How a call ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `Ok`, the handler's or stream's error code, `Cancelled` when the client
    /// went away, or the code of the interceptor that ended it.
    pub code: Code,
    /// The status message (empty for OK).
    pub message: String,
    /// The interceptor that ended the call (`"budget"`, `"rate"`, ...), if one did.
    pub ended_by: Option<&'static str>,
    /// Final counts.
    pub stats: CallStats,
    /// From the start of the call to its end.
    pub duration: Duration,
}

/// Counters one direction owns; on its own cache line so that the two
/// directions, often polled on two cores, do not bounce one line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Counters {
    /// Counts one message. Each direction has a single writer (its `Inbound`
    /// or `Outbound`, polled through `&mut`, or the one unary message), so a
    /// plain load and store suffice: no locked read-modify-write per message.
    #[inline]
    pub(crate) fn add(&self, bytes: usize) {
        self.bytes.store(self.bytes.load(Relaxed) + bytes as u64, Relaxed);
        self.messages.store(self.messages.load(Relaxed) + 1, Relaxed);
    }
}

/// One call, as seen by the interceptors and the handler.
///
/// Reach it from the handler body through the request's extensions:
/// `CallContext::of(&request)`; it stays valid after the call has ended.
pub struct CallContext {
    method: &'static MethodInfo,
    peer: Option<SocketAddr>,
    started: Instant,
    recv: Counters,
    sent: Counters,
    cancel: CancellationToken,
    /// Set when an interceptor ends the call: both directions end with it.
    terminal: OnceLock<Status>,
    ended_by: OnceLock<&'static str>,
    outcome: OnceLock<Outcome>,
    wakers: [AtomicWaker; 2],
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("method", &self.method.full_name)
            .field("peer", &self.peer)
            .field("stats", &self.stats())
            .field("outcome", &self.outcome.get())
            .finish_non_exhaustive()
    }
}

impl CallContext {
    pub(crate) fn new(method: &'static MethodInfo, peer: Option<SocketAddr>) -> Self {
        CallContext {
            method,
            peer,
            started: Instant::now(),
            recv: Counters::default(),
            sent: Counters::default(),
            cancel: CancellationToken::new(),
            terminal: OnceLock::new(),
            ended_by: OnceLock::new(),
            outcome: OnceLock::new(),
            wakers: [AtomicWaker::new(), AtomicWaker::new()],
        }
    }

    /// The context of the call a request belongs to, when the handler is
    /// intercepted.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Arc<CallContext>> {
        request.extensions().get::<CallHandle>().map(|h| h.0.clone())
    }

    /// The method.
    pub fn method(&self) -> &'static MethodInfo {
        self.method
    }

    /// The client's address, when the transport knows it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// When the call started (tokio's clock, so it follows a paused clock).
    pub fn started(&self) -> Instant {
        self.started
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

    /// Fires when the call is over: the client went away, an interceptor
    /// ended it, or it finished. Work the handler spawned can stop on it.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The final outcome, once the call is over.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.get()
    }

    /// The status an interceptor ended the call with, if one did.
    #[inline]
    pub fn terminal_status(&self) -> Option<&Status> {
        self.terminal.get()
    }

    #[inline]
    pub(crate) fn counters(&self, direction: Direction) -> &Counters {
        match direction {
            Direction::Inbound => &self.recv,
            Direction::Outbound => &self.sent,
        }
    }

    /// Records which interceptor ended the call; the first one named wins.
    pub(crate) fn mark_ended_by(&self, name: &'static str) {
        let _ = self.ended_by.set(name);
    }

    /// An interceptor ended the call: both directions end with `status`.
    pub(crate) fn terminate(&self, status: &Status) {
        if self.terminal.set(status.clone()).is_ok() {
            self.cancel.cancel();
            for waker in &self.wakers {
                waker.wake();
            }
        }
    }

    /// Registers the waker of a direction that waits, so that [`terminate`]
    /// wakes it, and says whether the call was terminated already.
    pub(crate) fn poll_terminated(&self, direction: Direction, waker: &std::task::Waker) -> Option<&Status> {
        if let Some(status) = self.terminal.get() {
            return Some(status);
        }
        self.wakers[direction as usize].register(waker);
        self.terminal.get()
    }

    /// Sets the outcome; true the first time only.
    pub(crate) fn set_outcome(&self, result: &Result<(), Status>) -> bool {
        if self.outcome.get().is_some() {
            return false;
        }
        let (code, message) = match result {
            Ok(()) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        };
        let outcome = Outcome {
            code,
            message,
            ended_by: self.ended_by.get().copied(),
            stats: self.stats(),
            duration: self.started.elapsed(),
        };
        let first = self.outcome.set(outcome).is_ok();
        if first {
            self.cancel.cancel();
        }
        first
    }
}

/// The request extension through which a handler reaches its call.
#[derive(Clone, Debug)]
pub(crate) struct CallHandle(pub(crate) Arc<CallContext>);
