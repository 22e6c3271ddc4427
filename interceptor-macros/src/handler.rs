//! Recognising a tonic handler's *shape*: where its request parameter is,
//! what it returns, and whether `#[tonic::async_trait]` already rewrote it.
//! Its RPC kind, request and response types are not read here: the
//! expansion hands the types as written (through any alias) to the compiler,
//! which picks the right code for them (see `interceptor_runtime::__private`'s
//! dispatch).
//!
//! Two shapes are accepted:
//! ```text
//! // written by the user (impl position, or a trait with native async fns)
//! async fn m(&self, request: In) -> Out { body }
//!
//! // what #[tonic::async_trait] hands an attribute written below it
//! fn m<'life0, 'async_trait>(&'life0 self, request: In)
//!     -> Pin<Box<dyn Future<Output = Out> + Send + 'async_trait>>
//!     where 'life0: 'async_trait, Self: 'async_trait
//! {
//!     Box::pin(async move {
//!         if let Some(__ret) = None::<Out> { return __ret; }   // the output's type, for inference
//!         let __self = self; let request = request;
//!         let __ret: Out = { body };
//!         __ret
//!     })
//! }
//! ```

use syn::{
    spanned::Spanned, Block, Error, Expr, FnArg, GenericArgument, Local, Pat, PathArguments, Result, ReturnType,
    Signature, Stmt, Type, TypeParamBound,
};

/// What to do when something rewrote a handler before the attribute saw it.
const REWRITTEN: &str = "an attribute above `#[intercept]` (`#[tracing::instrument]`, say) may have rewritten it \
                         first: put `#[intercept(..)]` above that one, or on the impl, above `#[tonic::async_trait]`";

const SHAPE: &str = "expected a tonic handler: \
    `async fn name(&self, request: tonic::Request<T>) -> Result<tonic::Response<U>, tonic::Status>`";

/// A recognised handler.
pub(crate) struct Handler {
    /// The request parameter's pattern (`request`, `mut request`, `_` ...).
    pub(crate) request: Pat,
    /// The request's type as written.
    pub(crate) request_type: Type,
    /// The return type as written (the future's output, for async_trait's
    /// shape).
    pub(crate) output: Type,
    /// Which of the two shapes.
    pub(crate) form: Form,
}

pub(crate) enum Form {
    /// `async fn`: the body is the user's block.
    AsyncFn,
    /// Already rewritten by async_trait: the statements of its `async move`
    /// block around `let __ret: Out = { body };`, without its own output
    /// annotations (`None::<Out>`, `: Out`): the expansion gives the body
    /// its type instead.
    AsyncTrait {
        /// The parameters' rebinding (`let __self = self; ..`).
        before: Vec<Stmt>,
        /// `{ body }`.
        body: Box<Expr>,
        /// `__ret`.
        after: Vec<Stmt>,
    },
}

/// The first statement of every expansion (without spaces): a body that
/// starts with it was expanded already.
const MARKER: &str = "use::interceptor_runtime::__privateas__icpt;";

/// Reads a handler's signature and body; errors point at the part that does
/// not fit.
pub(crate) fn recognise(sig: &Signature, block: &Block) -> Result<Handler> {
    let (output, form) = if sig.asyncness.is_some() {
        if starts_with_marker(&block.stmts) {
            return Err(twice(sig));
        }
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
        let stmts = async_block_stmts(block).ok_or_else(|| {
            Error::new(
                block.span(),
                format!(
                    "expected the body `#[tonic::async_trait]` writes (`Box::pin(async move {{ .. }})`); {REWRITTEN}"
                ),
            )
        })?;
        if starts_with_marker(&stmts) {
            return Err(twice(sig));
        }
        let form = split_at_body(stmts).ok_or_else(|| {
            Error::new(
                block.span(),
                format!("expected the body `#[tonic::async_trait]` writes (`let __ret: Output = {{ .. }}; __ret`); {REWRITTEN}"),
            )
        })?;
        // async_trait's rewrite of a body that was expanded already.
        if let Form::AsyncTrait { body, .. } = &form {
            if matches!(&**body, Expr::Block(b) if starts_with_marker(&b.block.stmts)) {
                return Err(twice(sig));
            }
        }
        (output, form)
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
    // A type that cannot be an alias of tonic's is an error here; any other
    // is left to the compiler.
    if !may_be_named(&request.ty) {
        return Err(Error::new(request.ty.span(), format!("{SHAPE}; the request must be a `tonic::Request<T>`")));
    }
    if !may_be_named(&output) {
        return Err(Error::new(
            output.span(),
            format!("{SHAPE}; the return type must be `Result<Response<U>, Status>`"),
        ));
    }
    Ok(Handler { request: (*request.pat).clone(), request_type: (*request.ty).clone(), output, form })
}

/// Whether `ty` may name `tonic::Request<..>` or `Result<Response<..>, ..>`,
/// perhaps through an alias: a path, but not a primitive type's.
fn may_be_named(ty: &Type) -> bool {
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64",
    ];
    match ty {
        Type::Path(p) => p.qself.is_some() || !p.path.get_ident().is_some_and(|i| PRIMITIVES.iter().any(|n| i == n)),
        Type::Group(g) => may_be_named(&g.elem),
        Type::Paren(p) => may_be_named(&p.elem),
        _ => false,
    }
}

fn starts_with_marker(stmts: &[Stmt]) -> bool {
    use quote::ToTokens;
    stmts.first().is_some_and(|s| {
        let text = s.to_token_stream().to_string();
        text.split_whitespace().collect::<String>() == MARKER
    })
}

fn twice(sig: &Signature) -> Error {
    Error::new(
        sig.ident.span(),
        "this handler is already intercepted: the `#[intercept]` on its impl wrapped it, and this attribute \
         (`#[intercept]` under another name, or from a macro) would wrap it again; write its options in \
         `#[intercept(..)]` (or `#[cfg_attr(.., intercept(..))]`) on the method, which the impl's attribute merges",
    )
}

/// `Wrapper<A, ..>` → `A`, matching the last path segment's name.
fn generic_of<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
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

/// `Pin<Box<dyn Future<Output = R> + Send + 'a>>` → `R`: async_trait's
/// signature, not the user's.
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
fn async_block_stmts(block: &Block) -> Option<Vec<Stmt>> {
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

/// async_trait's statements around `let __ret: Out = { body };`, without
/// the statement `if let Some(__ret) = None::<Out> { return __ret; }`.
fn split_at_body(stmts: Vec<Stmt>) -> Option<Form> {
    let mut before = Vec::new();
    let mut body = None;
    let mut after = Vec::new();
    for stmt in stmts {
        match stmt {
            Stmt::Expr(Expr::If(ref e), _) if matches!(&*e.cond, Expr::Let(l) if is_none_turbofish(&l.expr)) => {}
            Stmt::Local(local) if body.is_none() && is_ret(&local) => body = local.init.map(|init| init.expr),
            other if body.is_none() => before.push(other),
            other => after.push(other),
        }
    }
    Some(Form::AsyncTrait { before, body: body?, after })
}

/// `::core::option::Option::None::<Out>`
fn is_none_turbofish(expr: &Expr) -> bool {
    let Expr::Path(p) = expr else { return false };
    p.path.segments.last().is_some_and(|s| s.ident == "None" && !s.arguments.is_empty())
}

/// `let __ret: Out = ..`
fn is_ret(local: &Local) -> bool {
    let Pat::Type(typed) = &local.pat else { return false };
    matches!(&*typed.pat, Pat::Ident(i) if i.ident == "__ret") && local.init.is_some()
}
