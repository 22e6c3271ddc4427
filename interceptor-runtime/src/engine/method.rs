//! The method a call belongs to: its description ([`MethodInfo`],
//! [`RpcKind`]) and its interceptors ([`Method`]), built once per intercepted
//! handler and kept in the handler's [`Slot`] for the life of the process.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    ptr::NonNull,
    sync::{Mutex, OnceLock},
};

use crate::interceptor::Interceptor;

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
///
/// Built on the method's first call, from the names that call's request
/// carries (see [`NameSource`]).
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
    /// Where `service` and `method` came from: the wire, the attribute, or a
    /// guess from the Rust code.
    pub names: NameSource,
}

/// Where a [`MethodInfo`]'s names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameSource {
    /// The method's first call: the path the server routed it by (recorded
    /// by [`InterceptLayer`](crate::InterceptLayer)) or the request's
    /// `tonic::GrpcMethod`. Exactly as clients call the method.
    Request,
    /// The service as written in `service = ".."`; the method as the request
    /// names it, or, when it names none, derived from the handler's name.
    Given,
    /// Guessed from the Rust code, because the first call's request named no
    /// method (a server without `InterceptLayer`, a handler called
    /// directly): the service is the trait's module's `SERVICE_NAME` for an
    /// impl of `module::Trait`, else the trait's name (`Echo`), else, on a
    /// single method, the impl type's name; the method is the handler's name
    /// in upper camel case (`get_http_status` gives `GetHttpStatus`).
    Guessed,
}

impl MethodInfo {
    /// Describes a method; the strings are leaked once per method. The
    /// engine names a method by [`MethodInfo::named`]; this is for its tests.
    #[cfg(test)]
    pub(crate) fn new(service: &str, method: &str, kind: RpcKind) -> Self {
        MethodInfo::named(service, method, kind, NameSource::Given)
    }

    /// Describes a method whose names came from `names`.
    pub(crate) fn named(service: &str, method: &str, kind: RpcKind, names: NameSource) -> Self {
        let full_name = format!("/{service}/{method}");
        MethodInfo {
            service: Box::leak(service.into()),
            method: Box::leak(method.into()),
            full_name: Box::leak(full_name.into_boxed_str()),
            kind,
            names,
        }
    }
}

/// `my_crate::Guide<T>` → `"Guide"`: the service name guessed when the
/// attribute sits on a single method, no `service = ..` is given and the
/// first call's request names no method.
pub fn type_name_of<T: ?Sized>() -> &'static str {
    let name = std::any::type_name::<T>();
    let name = name.split('<').next().unwrap_or(name);
    name.rsplit("::").next().unwrap_or(name)
}

/// The interceptors of one method, built once.
// `repr(C)`, `info` first: a call finds its `Method` from `CallContext::method`.
#[repr(C)]
pub struct Method<I> {
    pub(super) info: MethodInfo,
    pub(super) interceptors: I,
}

/// Where a handler keeps its [`Method`]: one `static` per intercepted handler.
pub struct Slot(OnceLock<Box<dyn Any + Send + Sync>>);

impl Slot {
    /// An empty slot, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Slot(OnceLock::new())
    }

    /// The method's interceptors, built by `build` on the first call, and
    /// its description, by `info` from that call's request (its names: see
    /// [`NameSource`]). A generic impl's handler has one slot for all its
    /// types: they share one `MethodInfo` (they serve one trait, so one
    /// service), unless the interceptors' type differs (then one per type,
    /// alike).
    pub fn get_or_init<I: Interceptor>(
        &'static self,
        info: impl FnOnce() -> MethodInfo,
        build: impl FnOnce() -> I,
    ) -> &'static Method<I> {
        let mut parts = Some((info, build));
        let method = self.0.get_or_init(|| {
            let (info, build) = parts.take().expect("taken once");
            Box::new(Method { info: info(), interceptors: build() })
        });
        match (method.downcast_ref::<Method<I>>(), parts) {
            (Some(method), _) => method,
            // A handler in a generic impl whose interceptors' type depends on
            // the impl's parameters: one static serves several types.
            (None, Some((info, build))) => shared_by_type(self, info, build),
            (None, None) => unreachable!("the slot was just filled with a `Method<I>`"),
        }
    }
}

fn shared_by_type<I: Interceptor>(
    slot: &'static Slot,
    info: impl FnOnce() -> MethodInfo,
    build: impl FnOnce() -> I,
) -> &'static Method<I> {
    type Key = (usize, TypeId);
    static BY_TYPE: OnceLock<Mutex<HashMap<Key, &'static (dyn Any + Send + Sync)>>> = OnceLock::new();
    let key = (slot as *const Slot as usize, TypeId::of::<I>());
    let mut map = BY_TYPE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let method = *map.entry(key).or_insert_with(|| Box::leak(Box::new(Method { info: info(), interceptors: build() })));
    method.downcast_ref().expect("keyed by the type it holds")
}

impl<I> Method<I> {
    /// The method `info` with its `interceptors`.
    pub(crate) fn new(info: MethodInfo, interceptors: I) -> Self {
        Method { info, interceptors }
    }
}

impl<I: Interceptor> Method<I> {
    /// The method's description.
    pub fn info(&self) -> &MethodInfo {
        &self.info
    }
}

/// A `&'static Method<I>` with its `I` forgotten: what a call's context
/// keeps (I5). It is made from the whole method, so it reads back as the
/// method's `MethodInfo` (at the method's address, I4) and, knowing `I`, as
/// the `Method<I>` itself: never by widening a pointer to the `info` field.
#[derive(Clone, Copy)]
pub(crate) struct ErasedMethod(NonNull<MethodInfo>);

// SAFETY: I5, I7: it stands for a `&'static Method<I>`, which may be sent
// between threads: `new` requires `Method<I>: Sync`.
unsafe impl Send for ErasedMethod {}
// SAFETY: I5, I7: as for `Send`: a `&'static Method<I>` may be shared.
unsafe impl Sync for ErasedMethod {}

impl ErasedMethod {
    pub(crate) fn new<I: Interceptor>(method: &'static Method<I>) -> Self
    where
        Method<I>: Sync,
    {
        const { assert!(std::mem::offset_of!(Method<I>, info) == 0, "I4") };
        ErasedMethod(NonNull::from(method).cast())
    }

    /// The method's description.
    #[inline]
    pub(crate) fn info(self) -> &'static MethodInfo {
        // SAFETY: I5: the pointer is a `&'static Method<I>`'s, never freed;
        // I4: its `MethodInfo` is at its address.
        unsafe { self.0.as_ref() }
    }

    /// The method itself.
    ///
    /// # Safety
    /// `self` was made from a `Method<I>` of this `I` (I5).
    #[inline]
    pub(crate) unsafe fn method<I>(self) -> &'static Method<I> {
        // SAFETY: I5: the caller's promise: the pointer is a whole
        // `&'static Method<I>`'s, cast back to what it was.
        unsafe { self.0.cast::<Method<I>>().as_ref() }
    }
}
