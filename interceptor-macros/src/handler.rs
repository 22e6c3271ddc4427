//! Recognising a tonic handler and its RPC kind from its signature.
//!
//! Two shapes are accepted:
//! ```text
//! // written by the user (impl position, or a trait with native async fns)
//! async fn m(&self, request: Request<Streaming<In>>) -> Result<Response<Self::MStream>, Status> { body }
//!
//! // what #[tonic::async_trait] hands an attribute written below it
//! fn m<'life0, 'async_trait>(&'life0 self, request: Request<Streaming<In>>)
//!     -> Pin<Box<dyn Future<Output = Result<Response<Self::MStream>, Status>> + Send + 'async_trait>>
//!     where 'life0: 'async_trait, Self: 'async_trait
//! { Box::pin(async move { .. }) }
//! ```

use syn::{
    spanned::Spanned, Block, Error, Expr, FnArg, GenericArgument, Pat, PathArguments, Result, ReturnType, Signature,
    Stmt, Type, TypeParamBound,
};

const SHAPE: &str = "expected a tonic handler: \
    `async fn name(&self, request: tonic::Request<T>) -> Result<tonic::Response<U>, tonic::Status>`";

/// A recognised handler.
pub(crate) struct Handler {
    /// The request parameter's pattern (`request`, `mut request`, `_` ...).
    pub(crate) request: Pat,
    /// `Request<Streaming<T>>` rather than `Request<T>`.
    pub(crate) client_streaming: bool,
    /// `Some(Y)` for `Response<Y>` where `Y` is a stream type.
    pub(crate) response_stream: Option<Type>,
    /// `Result<Response<Y>, Status>` as written.
    pub(crate) output: Type,
    /// Which of the two shapes.
    pub(crate) form: Form,
}

pub(crate) enum Form {
    /// `async fn`: the body is the user's block.
    AsyncFn,
    /// Already rewritten by async_trait: the statements of its `async move` block.
    AsyncTrait(Vec<Stmt>),
}

impl Handler {
    /// The `RpcKind` variant.
    pub(crate) fn kind(&self) -> &'static str {
        match (self.client_streaming, self.response_stream.is_some()) {
            (false, false) => "Unary",
            (false, true) => "ServerStreaming",
            (true, false) => "ClientStreaming",
            (true, true) => "Bidi",
        }
    }
}

/// Reads a handler's signature and body; errors point at the part that does
/// not fit.
pub(crate) fn recognise(sig: &Signature, block: &Block) -> Result<Handler> {
    let (output, form) = if sig.asyncness.is_some() {
        match &sig.output {
            ReturnType::Type(_, ty) => ((**ty).clone(), Form::AsyncFn),
            ReturnType::Default => {
                return Err(Error::new(sig.paren_token.span.close(), format!("{SHAPE}; this fn returns nothing")))
            }
        }
    } else {
        let output = boxed_future_output(&sig.output).ok_or_else(|| {
            Error::new(
                sig.fn_token.span,
                format!("{SHAPE}; this fn is not `async` (write `async fn`, or put the attribute on the impl)"),
            )
        })?;
        let stmts = async_trait_body(block).ok_or_else(|| {
            Error::new(
                block.span(),
                "expected the body `#[tonic::async_trait]` writes (`Box::pin(async move { .. })`); \
                 put `#[intercept(..)]` above `#[tonic::async_trait]` on the impl instead",
            )
        })?;
        (output, Form::AsyncTrait(stmts))
    };

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(_)) => {}
        Some(other) => return Err(Error::new(other.span(), format!("{SHAPE}; the first parameter must be `&self`"))),
        None => return Err(Error::new(sig.paren_token.span.join(), format!("{SHAPE}; this fn takes no request"))),
    }
    let request = match inputs.next() {
        Some(FnArg::Typed(arg)) => arg,
        _ => return Err(Error::new(sig.paren_token.span.join(), format!("{SHAPE}; this fn takes no request"))),
    };
    if let Some(extra) = inputs.next() {
        return Err(Error::new(extra.span(), format!("{SHAPE}; a handler takes exactly one request")));
    }
    let name = (*request.pat).clone();
    let body = generic_of(&request.ty, "Request")
        .ok_or_else(|| Error::new(request.ty.span(), format!("{SHAPE}; the request must be a `tonic::Request<T>`")))?;
    let client_streaming = generic_of(body, "Streaming").is_some();

    let response = generic_of(&output, "Result").and_then(|ok| generic_of(ok, "Response")).ok_or_else(|| {
        Error::new(output.span(), format!("{SHAPE}; the return type must be `Result<Response<U>, Status>`"))
    })?;
    let response_stream = is_stream(response).then(|| response.clone());

    Ok(Handler { request: name, client_streaming, response_stream, output, form })
}

/// `Wrapper<A, ..>` → `A`, matching the last path segment's name.
pub(crate) fn generic_of<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
}

/// `Self::XStream`, a boxed `dyn Stream`, `BoxStream<T>`, `Outbound<S>` or a
/// generic type named `..Stream<..>` (`ReceiverStream<T>`: not wrappable,
/// but then the error says how to write it) is a response stream; anything
/// else a message. A message type is never generic, so a unary response
/// message named `..Stream` (`LiveStream`, `Stream`) stays a message.
fn is_stream(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return true;
    }
    let segments = &path.path.segments;
    if segments.len() == 2 && segments[0].ident == "Self" {
        return true;
    }
    segments.last().is_some_and(|last| {
        let name = last.ident.to_string();
        let generic = matches!(last.arguments, PathArguments::AngleBracketed(_));
        name == "Pin" || name == "Outbound" || (generic && name.ends_with("Stream"))
    })
}

/// `Pin<Box<dyn Stream ..>>` or `BoxStream<T>`: the outbound wrapper is boxed
/// back into the same type, so `type XStream = ..` stays as written.
pub(crate) fn is_boxed_stream(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    match path.path.segments.last() {
        Some(last) if last.ident == "BoxStream" => true,
        Some(last) if last.ident == "Pin" => true,
        _ => false,
    }
}

/// `Pin<Box<dyn Future<Output = R> + Send + 'a>>` → `R`.
fn boxed_future_output(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else { return None };
    let boxed = generic_of(generic_of(ty, "Pin")?, "Box")?;
    let Type::TraitObject(object) = boxed else { return None };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(t) = bound else { return None };
        let last = t.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(assoc.ty.clone()),
            _ => None,
        })
    })
}

/// `{ Box::pin(async move { stmts }) }` → `stmts`.
fn async_trait_body(block: &Block) -> Option<Vec<Stmt>> {
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else { return None };
    let Expr::Path(func) = &*call.func else { return None };
    if func.path.segments.last()?.ident != "pin" || call.args.len() != 1 {
        return None;
    }
    match call.args.first()? {
        Expr::Async(body) if body.capture.is_some() => Some(body.block.stmts.clone()),
        _ => None,
    }
}
