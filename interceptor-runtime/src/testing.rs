//! A test kit (feature `testing`): call an intercepted handler directly, with
//! its interceptors active, without a network.
//!
//! - [`MockStream`] scripts what the client sends: messages, errors and
//!   delays, queued in order ([`MockStream::add`]), a permanent fallback for
//!   when the queue is empty ([`MockStream::set`]), and
//!   [`MockStream::has_more`] to check every queued step was used.
//! - [`MockStream::request`] (or [`streaming_request`] for a plain `Vec`) makes
//!   it a real `tonic::Request<tonic::Streaming<T>>`, the type a client-streaming
//!   or bidi handler takes.
//! - [`probe`] marks a request so that the call it starts can be read back:
//!   live stats, and the [`Outcome`] once it has ended.
//! - [`set_grpc_path`] names the call as a client would call it
//!   (`/package.Service/Method`); without it the method's names are guessed
//!   from the Rust code.
//! - [`collect`] / [`collect_n`] read a handler's response stream to its end,
//!   or read `n` messages and then drop it as a client that goes away would.
//! - Lower down, for tests and benchmarks that build their own client streams:
//!   [`grpc_frame`] puts a message on the wire as a client would,
//!   [`streaming`] makes a `Streaming<T>` of any stream of
//!   `Result<T, Status>` (a channel a test keeps feeding, its messages
//!   mapped with `Ok`), and [`streaming_from_frames`] one
//!   that reads a whole request body of frames from memory.
//!
//! ```
//! use interceptor_runtime::{intercept, testing::{collect, probe, MockStream}};
//! use tonic::{Code, Request, Response, Status, Streaming};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Num {
//!     #[prost(int64, tag = "1")]
//!     pub n: i64,
//! }
//!
//! struct Adder;
//!
//! impl Adder {
//!     #[intercept(monitor, budget = 3)]
//!     async fn sum(&self, request: Request<Streaming<Num>>) -> Result<Response<Num>, Status> {
//!         let mut numbers = request.into_inner();
//!         let mut total = 0;
//!         while let Some(number) = numbers.message().await? {
//!             total += number.n;
//!         }
//!         Ok(Response::new(Num { n: total }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Two numbers: the sum, and the call's counts.
//! let client = MockStream::new();
//! client.add_message(Num { n: 1 }).add_message(Num { n: 2 });
//! let mut request = client.request();
//! let call = probe(&mut request);
//! assert_eq!(Adder.sum(request).await.unwrap().into_inner().n, 3);
//! assert!(!client.has_more());
//! let outcome = call.outcome().unwrap();
//! assert_eq!((outcome.code, outcome.stats.messages_received), (Code::Ok, 2));
//!
//! // Four numbers: the budget of 3 ends the call.
//! let client = MockStream::new();
//! client.add_messages((1..=4).map(|n| Num { n }));
//! let mut request = client.request();
//! let call = probe(&mut request);
//! let status = Adder.sum(request).await.unwrap_err();
//! assert_eq!(status.code(), Code::ResourceExhausted);
//! assert_eq!(call.outcome().unwrap().ended_by, Some("budget"));
//! # }
//! ```
//!
//! # How this relates to Clue's mock package
//! Clue (`goa.design/clue/mock`) keeps one sequence of behaviours shared by all
//! the operation names of a mock: `Add(name, f)` queues `f` for one call,
//! `Set(name, f)` gives `name` a permanent behaviour, `Next(name)` returns the
//! next queued behaviour, and `HasMore()` says whether queued ones are left.
//! In Clue a `Next` for a name that is not the next queued one returns nothing
//! and does not fall back to `Set`.
//!
//! A mock inbound stream has one operation, "the client's next step", so
//! here: [`add`](MockStream::add) queues a step used once, in order;
//! [`set`](MockStream::set) gives the fallback used whenever the queue is
//! empty (Clue's `Set`: it is consulted only when nothing is queued, so the
//! "wrong name" case cannot arise); with neither, the stream ends cleanly, as
//! a client that has finished sending. [`has_more`](MockStream::has_more) is
//! Clue's `HasMore`, and [`next_step`](MockStream::next_step) its `Next`. All
//! requests made from one `MockStream` share its sequence, as Clue's names do.

use std::{
    collections::VecDeque,
    fmt,
    pin::{pin, Pin},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;
use http_body::Frame;
use tonic::{codec::Codec, Request, Response, Status, Streaming};

use crate::engine::{CallRef, Outcome};

/// One step of a scripted client stream.
pub enum Step<T> {
    /// The client sends this message.
    Message(T),
    /// The stream fails with this status (the handler's inbound yields it).
    Error(Status),
    /// Nothing happens for this long (tokio's clock: a paused clock skips it).
    Delay(Duration),
}

impl<T: fmt::Debug> fmt::Debug for Step<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Step::Error(s) => f.debug_tuple("Error").field(s).finish(),
            Step::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
        }
    }
}

type Fallback<T> = Box<dyn FnMut() -> Option<Step<T>> + Send>;

struct Script<T> {
    queue: VecDeque<Step<T>>,
    fallback: Option<Fallback<T>>,
}

/// A scripted client stream; see the [module docs](self). Cloning it gives
/// another handle on the same script.
pub struct MockStream<T> {
    script: Arc<Mutex<Script<T>>>,
}

impl<T> Clone for MockStream<T> {
    fn clone(&self) -> Self {
        MockStream { script: self.script.clone() }
    }
}

impl<T> fmt::Debug for MockStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let script = self.lock();
        f.debug_struct("MockStream")
            .field("queued", &script.queue.len())
            .field("fallback", &script.fallback.is_some())
            .finish()
    }
}

impl<T> Default for MockStream<T> {
    fn default() -> Self {
        MockStream { script: Arc::new(Mutex::new(Script { queue: VecDeque::new(), fallback: None })) }
    }
}

impl<T> MockStream<T> {
    /// An empty script: the stream ends at once.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script<T>> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one step, used once, after those queued before it (Clue's `Add`).
    pub fn add(&self, step: Step<T>) -> &Self {
        self.lock().queue.push_back(step);
        self
    }

    /// Queues a message.
    pub fn add_message(&self, message: T) -> &Self {
        self.add(Step::Message(message))
    }

    /// Queues messages, in order.
    pub fn add_messages(&self, messages: impl IntoIterator<Item = T>) -> &Self {
        self.lock().queue.extend(messages.into_iter().map(Step::Message));
        self
    }

    /// Queues an error.
    pub fn add_error(&self, status: Status) -> &Self {
        self.add(Step::Error(status))
    }

    /// Queues a pause.
    pub fn add_delay(&self, delay: Duration) -> &Self {
        self.add(Step::Delay(delay))
    }

    /// The permanent fallback, asked for a step whenever nothing is queued
    /// (Clue's `Set`); `None` from it ends the stream.
    pub fn set(&self, fallback: impl FnMut() -> Option<Step<T>> + Send + 'static) -> &Self {
        self.lock().fallback = Some(Box::new(fallback));
        self
    }

    /// Whether queued steps were not used yet (Clue's `HasMore`).
    pub fn has_more(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// The next step: the next queued one, else the fallback's, else `None`
    /// (Clue's `Next`).
    pub fn next_step(&self) -> Option<Step<T>> {
        let mut script = self.lock();
        if let Some(step) = script.queue.pop_front() {
            return Some(step);
        }
        script.fallback.as_mut().and_then(|fallback| fallback())
    }
}

impl<T: prost::Message + Default + Send + 'static> MockStream<T> {
    /// A real `tonic::Streaming<T>` that plays the script: each message is
    /// encoded as a gRPC frame and decoded by tonic's prost decoder, as if it
    /// had come over the wire.
    pub fn streaming(&self) -> Streaming<T> {
        streaming(futures_util::stream::unfold(self.clone(), |mock| async move {
            loop {
                match mock.next_step()? {
                    Step::Message(message) => return Some((Ok(message), mock)),
                    Step::Error(status) => return Some((Err(status), mock)),
                    Step::Delay(delay) => tokio::time::sleep(delay).await,
                }
            }
        }))
    }

    /// A request carrying [`streaming`](Self::streaming), for a
    /// client-streaming or bidi handler.
    pub fn request(&self) -> Request<Streaming<T>> {
        Request::new(self.streaming())
    }
}

/// `Request<Streaming<T>>` that sends `messages` and ends.
pub fn streaming_request<T>(messages: impl IntoIterator<Item = T>) -> Request<Streaming<T>>
where
    T: prost::Message + Default + Send + 'static,
{
    let mock = MockStream::new();
    mock.add_messages(messages);
    mock.request()
}

/// A message as a gRPC client puts it on the wire (a "Length-Prefixed-Message"
/// of the gRPC over HTTP/2 protocol): a 0 byte (not compressed), the length of
/// the protobuf encoding as 4 bytes big-endian, the encoding.
///
/// Frames put one after another make a request body: see
/// [`streaming_from_frames`].
///
/// ```
/// use interceptor_runtime::testing::grpc_frame;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct Num {
///     #[prost(int64, tag = "1")]
///     pub n: i64,
/// }
///
/// // Field 1, varint 300: 3 bytes.
/// assert_eq!(&grpc_frame(&Num { n: 300 })[..], [0, 0, 0, 0, 3, 0x08, 0xac, 0x02]);
/// ```
pub fn grpc_frame<T: prost::Message>(message: &T) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// A `tonic::Streaming<T>` as tonic hands one to a client-streaming or bidi
/// handler, fed from `messages`: each is sent as a [`grpc_frame`] when the
/// stream yields it, and decoded by tonic's prost decoder; an `Err` fails the
/// request body (the handler's next read yields it); the end of `messages`
/// is the client's end of stream.
///
/// For a client a test drives step by step, feed it from a channel:
///
/// ```
/// use interceptor_runtime::testing::streaming;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct Num {
///     #[prost(int64, tag = "1")]
///     pub n: i64,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (client, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let mut inbound = streaming(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|m| m.map(Ok))));
/// client.send(Num { n: 1 }).unwrap();
/// assert_eq!(inbound.message().await.unwrap(), Some(Num { n: 1 }));
/// drop(client); // the client is done sending
/// assert_eq!(inbound.message().await.unwrap(), None);
/// # }
/// ```
pub fn streaming<T, S>(messages: S) -> Streaming<T>
where
    T: prost::Message + Default + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let frames = messages.map(|message| message.map(|message| Frame::data(grpc_frame(&message))));
    let body = http_body_util::StreamBody::new(Box::pin(frames));
    Streaming::new_request(tonic_prost::ProstCodec::<T, T>::default().decoder(), body, None, None)
}

/// A `tonic::Streaming<T>` that reads a whole request body from memory:
/// `frames` is [`grpc_frame`]s one after another, handed to tonic's decoder in
/// one piece (as a client that sent them all at once), so that reading it
/// costs only decoding. For benchmarks of the inbound direction.
pub fn streaming_from_frames<T>(frames: Bytes) -> Streaming<T>
where
    T: prost::Message + Default + Send + 'static,
{
    let body = http_body_util::Full::new(frames);
    Streaming::new_request(tonic_prost::ProstCodec::<T, T>::default().decoder(), body, None, None)
}

/// The request extension [`probe`] adds; the runtime fills it when the call
/// starts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe(pub(crate) Arc<OnceLock<CallRef>>);

/// Reads back the call a probed request started.
#[derive(Clone, Debug)]
pub struct CallProbe(Arc<OnceLock<CallRef>>);

impl CallProbe {
    /// The call, once the intercepted handler has started it.
    pub fn context(&self) -> Option<CallRef> {
        self.0.get().cloned()
    }

    /// How the call ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.0.get().and_then(|ctx| ctx.outcome().cloned())
    }
}

/// Marks `request` so that the call it starts can be read back.
pub fn probe<T>(request: &mut Request<T>) -> CallProbe {
    let probe = Probe::default();
    request.extensions_mut().insert(probe.clone());
    CallProbe(probe.0)
}

/// Gives `request` the path a client would call, `/package.Service/Method`,
/// as [`InterceptLayer`](crate::InterceptLayer) does on a server. A
/// method takes its names from its first call: a handler called directly
/// without it (and without `service = ".."`) is named by a guess from the
/// Rust code, for the rest of the process (see
/// [`NameSource`](crate::NameSource)).
///
/// # Panics
/// If `path` is not a gRPC method's path (`/package.Service/Method`).
pub fn set_grpc_path<T>(request: &mut Request<T>, path: &str) {
    let parsed =
        http::uri::PathAndQuery::try_from(path).ok().filter(|_| crate::transport::names::split(path).is_some());
    let Some(parsed) = parsed else {
        panic!("set_grpc_path: `{path}` is not a gRPC method's path; write it as `/package.Service/Method`")
    };
    request.extensions_mut().insert(crate::transport::names::RequestPath(parsed));
}

/// What a handler's response stream carried.
#[derive(Debug)]
pub struct Collected<T> {
    /// The messages, in order.
    pub messages: Vec<T>,
    /// The error that ended the stream (or the handler's error), if any.
    pub status: Option<Status>,
}

/// Reads a handler's response stream to its end.
pub async fn collect<T, S>(response: Result<Response<S>, Status>) -> Collected<T>
where
    S: Stream<Item = Result<T, Status>>,
{
    collect_n(response, usize::MAX).await
}

/// Reads at most `n` messages, then drops the stream: with fewer than the
/// stream has, a client that goes away (the call ends CANCELLED).
pub async fn collect_n<T, S>(response: Result<Response<S>, Status>, n: usize) -> Collected<T>
where
    S: Stream<Item = Result<T, Status>>,
{
    let mut collected = Collected { messages: Vec::new(), status: None };
    let stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            collected.status = Some(status);
            return collected;
        }
    };
    let mut stream: Pin<&mut S> = pin!(stream);
    while collected.messages.len() < n {
        match stream.next().await {
            Some(Ok(message)) => collected.messages.push(message),
            Some(Err(status)) => {
                collected.status = Some(status);
                break;
            }
            None => break,
        }
    }
    collected
}
