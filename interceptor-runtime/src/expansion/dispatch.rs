//! How an expansion learns what its handler receives and returns: from the
//! types, through the compiler, never from how they are spelled. A handler
//! may write `tonic::Request<T>` and `Result<Response<U>, Status>` through any
//! alias (`type Streaming<T> = Request<tonic::Streaming<T>>`,
//! `tonic::Result<Response<U>>`, a renamed import ...).
//!
//! ```text
//! let __icpt_in = __icpt::in_shape((&&__icpt::request_probe(&request)).__icpt_in());
//! let __icpt_out = __icpt::out_shape((&&__icpt::reply_probe::<Out>()).__icpt_out());
//! __icpt::kind(&__icpt_in, &__icpt_out)           // the RpcKind, from the two shapes' consts
//! ```
//! [`request_probe`] takes the request `Request<X>` to a `Probe<X>`, and
//! [`reply_probe`] the handler's `Result<Response<Y>, Status>` to a
//! `Probe<Y>`. A method call on `&&Probe<_>` then picks its impl by autoref,
//! the one for `&Probe<..>` before the one for `Probe<..>`:
//! - request: `Probe<Streaming<T>>` is a client stream ([`InStream`]), any
//!   other `Probe<M>` one message ([`InMessage`]);
//! - response: `Probe<M>` with `M: prost::Message` is one message
//!   ([`OutMessage`]), any other a response stream ([`OutStream`]), which
//!   `out_shape` requires to be an [`OutboundStream`] (its error says how to
//!   declare one).
//!
//! Two trait impls could not make these choices: "every `prost::Message`"
//! and "`tonic::Streaming<T>`" are both foreign, so coherence calls them
//! overlapping. Method resolution at the call site, where the type is known,
//! does it instead. A type it cannot use is an error that says what to write
//! (the `on_unimplemented` messages below), and `in_shape`/`out_shape`
//! return an associated type, so such an error is reported once, not at
//! every later use.
//!
//! The shapes then run the call: `receive` the request, give the body's
//! output its type (`none`, `hinted`: the body produces
//! [`OutboundStream::Inner`] for a stream), and `finish`.

use std::{future::Future, marker::PhantomData};

use tonic::{Request, Response, Status, Streaming};

use crate::{
    engine::{CallGuard, RpcKind},
    interceptor::Interceptor,
    stream::{Inbound, OutboundStream},
};

/// A type, as a value for method resolution to look at.
pub struct Probe<T>(PhantomData<fn() -> T>);

/// `tonic::Request<X>`, whatever it is called.
#[diagnostic::on_unimplemented(
    message = "`#[intercept]` expects the handler's request to be a `tonic::Request<..>`, not `{Self}`",
    label = "not a `tonic::Request<..>`",
    note = "a tonic handler takes `tonic::Request<Message>` or `tonic::Request<tonic::Streaming<Message>>` \
            (written through any alias)"
)]
pub trait HandlerRequest {
    /// `X` of `Request<X>`.
    type Body;
}

impl<X> HandlerRequest for Request<X> {
    type Body = X;
}

/// `Result<tonic::Response<Y>, tonic::Status>`, whatever it is called.
#[diagnostic::on_unimplemented(
    message = "`#[intercept]` expects the handler to return `Result<tonic::Response<..>, tonic::Status>`, not `{Self}`",
    label = "not a `Result<tonic::Response<..>, tonic::Status>`",
    note = "a tonic handler returns `Result<Response<Message>, Status>` or `Result<Response<Self::XStream>, Status>` \
            (written through any alias, like `tonic::Result<Response<..>>`)"
)]
pub trait HandlerResult {
    /// `Y` of `Result<Response<Y>, Status>`.
    type Reply;
}

impl<Y> HandlerResult for Result<Response<Y>, Status> {
    type Reply = Y;
}

/// The request's body type, to dispatch on.
#[inline]
pub fn request_probe<R: HandlerRequest>(_: &R) -> Probe<R::Body> {
    Probe(PhantomData)
}

/// The response's type, to dispatch on.
#[inline]
pub fn reply_probe<R: HandlerResult>() -> Probe<R::Reply> {
    Probe(PhantomData)
}

/// What the request's dispatch found, before it is checked.
pub struct ClientStream<T>(PhantomData<fn() -> T>);
/// See [`ClientStream`].
pub struct OneRequest<T>(PhantomData<fn() -> T>);
/// What the response's dispatch found, before it is checked.
pub struct OneReply<T>(PhantomData<fn() -> T>);
/// See [`OneReply`].
pub struct ServerStream<T>(PhantomData<fn() -> T>);

/// Picked first (autoref): `Request<Streaming<T>>`.
pub trait StreamingRequestProbe {
    /// `ClientStream`.
    type Found;
    #[allow(missing_docs)]
    fn __icpt_in(&self) -> Self::Found;
}

impl<T> StreamingRequestProbe for &Probe<Streaming<T>> {
    type Found = ClientStream<T>;
    #[inline]
    fn __icpt_in(&self) -> ClientStream<T> {
        ClientStream(PhantomData)
    }
}

/// Picked otherwise: `Request<M>`.
pub trait MessageRequestProbe {
    /// `OneRequest`.
    type Found;
    #[allow(missing_docs)]
    fn __icpt_in(&self) -> Self::Found;
}

impl<M> MessageRequestProbe for Probe<M> {
    type Found = OneRequest<M>;
    #[inline]
    fn __icpt_in(&self) -> OneRequest<M> {
        OneRequest(PhantomData)
    }
}

/// Picked first (autoref): a message.
pub trait MessageReplyProbe {
    /// `OneReply`.
    type Found;
    #[allow(missing_docs)]
    fn __icpt_out(&self) -> Self::Found;
}

impl<M: prost::Message> MessageReplyProbe for &Probe<M> {
    type Found = OneReply<M>;
    #[inline]
    fn __icpt_out(&self) -> OneReply<M> {
        OneReply(PhantomData)
    }
}

/// Picked otherwise: a response stream.
pub trait StreamReplyProbe {
    /// `ServerStream`.
    type Found;
    #[allow(missing_docs)]
    fn __icpt_out(&self) -> Self::Found;
}

impl<S> StreamReplyProbe for Probe<S> {
    type Found = ServerStream<S>;
    #[inline]
    fn __icpt_out(&self) -> ServerStream<S> {
        ServerStream(PhantomData)
    }
}

/// A request an intercepted handler can receive.
pub trait InShape {
    /// `Request<Streaming<T>>`.
    const STREAMING: bool;
}

/// A response an intercepted handler can return.
pub trait OutShape {
    /// A response stream.
    const STREAMING: bool;
}

/// What [`in_shape`] checks.
pub trait CheckIn {
    /// [`InStream`] or [`InMessage`].
    type Shape: InShape;
    #[allow(missing_docs)]
    fn shape(self) -> Self::Shape;
}

impl<T: prost::Message + 'static> CheckIn for ClientStream<T> {
    type Shape = InStream<T>;
    #[inline]
    fn shape(self) -> InStream<T> {
        InStream(PhantomData)
    }
}

impl<M: prost::Message + 'static> CheckIn for OneRequest<M> {
    type Shape = InMessage<M>;
    #[inline]
    fn shape(self) -> InMessage<M> {
        InMessage(PhantomData)
    }
}

/// What [`out_shape`] checks.
pub trait CheckOut {
    /// [`OutStream`] or [`OutMessage`].
    type Shape: OutShape;
    #[allow(missing_docs)]
    fn shape(self) -> Self::Shape;
}

impl<M: prost::Message + 'static> CheckOut for OneReply<M> {
    type Shape = OutMessage<M>;
    #[inline]
    fn shape(self) -> OutMessage<M> {
        OutMessage(PhantomData)
    }
}

// `S::Inner` is named in the shape, so that a type that is not an
// `OutboundStream` makes the shape an error type: reported once, here.
impl<S: OutboundStream> CheckOut for ServerStream<S> {
    type Shape = OutStream<S, S::Inner>;
    #[inline]
    fn shape(self) -> OutStream<S, S::Inner> {
        OutStream(PhantomData)
    }
}

/// The request's shape, checked.
#[inline]
pub fn in_shape<F: CheckIn>(found: F) -> F::Shape {
    found.shape()
}

/// The response's shape, checked.
#[inline]
pub fn out_shape<F: CheckOut>(found: F) -> F::Shape {
    found.shape()
}

/// The RPC kind of a handler that receives `A` and returns `B`.
#[inline]
pub fn kind<A: InShape, B: OutShape>(_: &A, _: &B) -> RpcKind {
    match (A::STREAMING, B::STREAMING) {
        (false, false) => RpcKind::Unary,
        (false, true) => RpcKind::ServerStreaming,
        (true, false) => RpcKind::ClientStreaming,
        (true, true) => RpcKind::Bidi,
    }
}

/// A client stream of `T`.
pub struct InStream<T>(PhantomData<fn() -> T>);
/// One request message `M`.
pub struct InMessage<M>(PhantomData<fn() -> M>);
/// A response stream `S`, which the body produces as `B`.
pub struct OutStream<S, B>(PhantomData<fn() -> (S, B)>);
/// One response message `M`.
pub struct OutMessage<M>(PhantomData<fn() -> M>);

macro_rules! copy {
    ($($shape:ident),*) => {$(
        impl<T> Clone for $shape<T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T> Copy for $shape<T> {}
    )*};
}
copy!(InStream, InMessage, OutMessage);

impl<S, B> Clone for OutStream<S, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S, B> Copy for OutStream<S, B> {}

impl<T> InShape for InStream<T> {
    const STREAMING: bool = true;
}

impl<M> InShape for InMessage<M> {
    const STREAMING: bool = false;
}

impl<S, B> OutShape for OutStream<S, B> {
    const STREAMING: bool = true;
}

impl<M> OutShape for OutMessage<M> {
    const STREAMING: bool = false;
}

impl<T: prost::Message + 'static> InStream<T> {
    /// The request as the body sees it: `Request<Inbound<T>>`.
    #[inline]
    pub fn receive<I: Interceptor>(
        self,
        call: &mut CallGuard<I>,
        request: Request<Streaming<T>>,
    ) -> impl Future<Output = Result<Request<Inbound<T>>, Status>> {
        std::future::ready(Ok(call.inbound(request)))
    }
}

impl<M: prost::Message + 'static> InMessage<M> {
    /// The request, once the inbound hooks passed its message.
    #[inline]
    pub fn receive<'a, I: Interceptor>(
        self,
        call: &'a mut CallGuard<I>,
        request: Request<M>,
    ) -> impl Future<Output = Result<Request<M>, Status>> + 'a {
        call.recv_unary(request)
    }
}

impl<S, B> OutStream<S, B> {
    /// `None`, of the type the body produces: `Result<Response<B>, Status>`.
    #[inline]
    pub fn none(self) -> Option<Result<Response<B>, Status>> {
        None
    }

    /// The body's output, given its type.
    #[inline]
    pub fn hinted(self, output: Result<Response<B>, Status>) -> Result<Response<B>, Status> {
        output
    }
}

impl<M: prost::Message + 'static> OutMessage<M> {
    /// `None`, of the type the body produces: `Result<Response<M>, Status>`.
    #[inline]
    pub fn none(self) -> Option<Result<Response<M>, Status>> {
        None
    }

    /// The body's output, given its type.
    #[inline]
    pub fn hinted(self, output: Result<Response<M>, Status>) -> Result<Response<M>, Status> {
        output
    }
}

impl<S: OutboundStream<Inner = B>, B> OutStream<S, B> {
    /// Wraps the stream the body produced; it now owns the end of the call.
    #[inline]
    pub fn finish<I: Interceptor>(
        self,
        call: CallGuard<I>,
        result: Result<Response<B>, Status>,
    ) -> impl Future<Output = Result<Response<S>, Status>> {
        std::future::ready(call.finish_stream::<S>(result))
    }
}

impl<M: prost::Message + 'static> OutMessage<M> {
    /// Runs the outbound hooks on the message and ends the call.
    #[inline]
    pub fn finish<I: Interceptor>(
        self,
        call: CallGuard<I>,
        result: Result<Response<M>, Status>,
    ) -> impl Future<Output = Result<Response<M>, Status>> {
        call.finish_unary(result)
    }
}

/// `with = expr`: checks that `expr` is an interceptor, where the user wrote
/// it.
#[inline]
pub fn with<W: Interceptor>(interceptor: W) -> W {
    interceptor
}

/// The traits the expansion calls methods of, in scope without a name.
pub mod prelude {
    pub use super::{
        MessageReplyProbe as _, MessageRequestProbe as _, StreamReplyProbe as _, StreamingRequestProbe as _,
    };
}
