//! Code generation: a handler gets a short prologue and epilogue around its
//! unchanged body, calling `interceptor_runtime::__private`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{
    parse_quote, spanned::Spanned, visit_mut::VisitMut, Attribute, Block, Error, Expr, GenericArgument, Ident,
    ImplItem, ImplItemFn, Item, ItemImpl, PathArguments, Result, Signature, Stmt, Type, Visibility,
};

use crate::{
    attr::{self, Args, Item as Interceptor},
    handler::{self, Form, Handler},
};

/// The attribute's entry point: an impl or a single handler.
pub(crate) fn intercept(args: TokenStream, item: TokenStream) -> Result<TokenStream> {
    let args: Args = syn::parse2(args)?;
    let item: Item = syn::parse2(item).map_err(|e| Error::new(e.span(), format!("{e}; {PLACE}")))?;
    match item {
        Item::Impl(imp) => expand_impl(args, imp),
        Item::Fn(f) => {
            let service = match &args.service {
                Some(service) => quote!(#service),
                None => quote!(__icpt::type_name_of::<Self>()),
            };
            let handler = handler::recognise(&f.sig, &f.block)?;
            expand_fn(&args, &service, &f.attrs, &f.vis, &f.sig, &f.block, &handler)
        }
        Item::Trait(t) => Err(Error::new(
            t.trait_token.span,
            "`#[intercept]` goes on the impl of a service trait, not on the trait definition; \
             write it above `#[tonic::async_trait]` on `impl Service for YourType`",
        )),
        other => Err(Error::new(first_token(&other), PLACE)),
    }
}

const PLACE: &str = "`#[intercept]` goes on a tonic service impl (above `#[tonic::async_trait]`) \
    or on one of its handler methods";

fn first_token(item: &Item) -> Span {
    item.to_token_stream().into_iter().next().map_or_else(Span::call_site, |t| t.span())
}

/// Input:
/// ```text
/// #[intercept(monitor)] #[tonic::async_trait]
/// impl route_guide_server::RouteGuide for Guide {
///     type RouteChatStream = S;
///     #[intercept(rate = 10)] async fn route_chat(..) { body }
///     async fn get_feature(..) { body }
/// }
/// ```
/// Output: every handler expanded as by [`expand_fn`] with the impl's
/// interceptors followed by its own, and `type RouteChatStream = Outbound<S>;`
/// (a boxed stream type is left alone: the wrapper is boxed back into it).
fn expand_impl(args: Args, mut imp: ItemImpl) -> Result<TokenStream> {
    let Some((_, trait_path, _)) = &imp.trait_ else {
        return Err(Error::new(
            imp.self_ty.span(),
            "`#[intercept]` on an impl needs the impl of a tonic service trait, \
             e.g. `impl route_guide_server::RouteGuide for Guide`",
        ));
    };
    // tonic-build puts `pub const SERVICE_NAME` beside the trait.
    let default_service = if trait_path.segments.len() >= 2 {
        let mut module = trait_path.clone();
        module.segments.pop();
        quote!(#module SERVICE_NAME)
    } else {
        let name = trait_path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        quote!(#name)
    };

    let mut errors: Vec<Error> = Vec::new();
    let mut stream_types: Vec<Ident> = Vec::new();
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let own = match take_intercept_attrs(&mut f.attrs) {
            Ok(own) => own,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        // Every fn of a tonic service impl is a handler: one that does not
        // look like one is an error, never silently left unintercepted.
        let handler = match handler::recognise(&f.sig, &f.block) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let args = match own {
            Some(own) => args.clone().merge(own),
            None => args.clone(),
        };
        let service = match &args.service {
            Some(s) => quote!(#s),
            None => default_service.clone(),
        };
        if let Some(ident) = handler.response_stream.as_ref().and_then(self_assoc_type) {
            stream_types.push(ident.clone());
        }
        match expand_fn(&args, &service, &f.attrs, &f.vis, &f.sig, &f.block, &handler)
            .and_then(syn::parse2::<ImplItemFn>)
        {
            Ok(expanded) => *f = expanded,
            Err(e) => errors.push(e),
        }
    }
    if let Some(mut first) = errors.pop() {
        for e in errors {
            first.combine(e);
        }
        return Err(first);
    }
    for item in &mut imp.items {
        if let ImplItem::Type(t) = item {
            if stream_types.contains(&t.ident) && !handler::is_boxed_stream(&t.ty) {
                let ty = &t.ty;
                t.ty = parse_quote!(::interceptor_runtime::Outbound<#ty>);
            }
        }
    }
    Ok(imp.into_token_stream())
}

/// Removes the method's own `#[intercept(..)]` attributes and parses them.
fn take_intercept_attrs(attrs: &mut Vec<Attribute>) -> Result<Option<Args>> {
    let mut found: Option<Args> = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        if attr.path().segments.last().is_some_and(|s| s.ident == "intercept") {
            let args = match &attr.meta {
                syn::Meta::Path(_) => Args::default(),
                _ => attr.parse_args::<Args>()?,
            };
            found = Some(match found {
                Some(prev) => prev.merge(args),
                None => args,
            });
        } else {
            kept.push(attr);
        }
    }
    *attrs = kept;
    Ok(found)
}

/// `Self::X` → `X`.
fn self_assoc_type(ty: &Type) -> Option<&Ident> {
    let Type::Path(p) = ty else { return None };
    let s = &p.path.segments;
    (p.qself.is_none() && s.len() == 2 && s[0].ident == "Self").then(|| &s[1].ident)
}

/// Input: `async fn m(&self, request: Request<In>) -> Result<Response<Out>, Status> { body }`
/// (or async_trait's rewrite of it, `fn m<..>(..) -> Pin<Box<dyn Future<..>>> { Box::pin(async move { .. }) }`).
///
/// Output, the same signature, and:
/// ```text
/// static SLOT; let method = SLOT.get_or_init(info, || Chain::new(a, Chain::new(b, c)));
/// let mut call = method.start(&mut request)?;              // on_start hooks
/// let request = call.inbound(request);                     // or call.recv_unary(request).await?
/// let result: Result<Response<Inner>, Status> = call.run(async move { body }).await;  // timers beside it
/// call.finish_stream::<Out>(result)                        // or call.finish_unary(result).await
/// ```
/// (async_trait's shape gets the same, inside its `Box::pin(async move { .. })`).
fn expand_fn(
    args: &Args,
    service: &TokenStream,
    attrs: &[Attribute],
    vis: &Visibility,
    sig: &Signature,
    block: &Block,
    handler: &Handler,
) -> Result<TokenStream> {
    let rt = quote!(__icpt);
    let chain = chain(&args.items)?;
    let method_name = proto_name(&sig.ident);
    let kind = Ident::new(handler.kind(), Span::call_site());
    // The parameter is renamed; the user's pattern is bound to the wrapped
    // request, so `request`, `mut request` and `_` all work.
    let request = Ident::new("__icpt_request", Span::call_site());
    let pattern = &handler.request;
    let mut sig = sig.clone();
    if let Some(syn::FnArg::Typed(arg)) = sig.inputs.iter_mut().nth(1) {
        *arg.pat = parse_quote!(#request);
    }
    let output = &handler.output;
    // The handler body produces the stream it always did; the client gets
    // `OutboundStream::wrap` of it.
    let inner_output = match &handler.response_stream {
        Some(stream) => {
            replace_response(output, &parse_quote!(<#stream as ::interceptor_runtime::OutboundStream>::Inner))
        }
        None => output.clone(),
    };
    let inbound = if handler.client_streaming {
        quote!(let #pattern = __icpt_call.inbound(#request);)
    } else {
        quote! {
            let #pattern = match __icpt_call.recv_unary(#request).await {
                ::core::result::Result::Ok(request) => request,
                ::core::result::Result::Err(status) => return ::core::result::Result::Err(status),
            };
        }
    };
    let finish = match &handler.response_stream {
        Some(stream) => quote!(__icpt_call.finish_stream::<#stream>(__icpt_result)),
        None => quote!(__icpt_call.finish_unary(__icpt_result).await),
    };
    let body = match &handler.form {
        Form::AsyncFn => quote! {
            async move {
                if let ::core::option::Option::Some(__ret) = ::core::option::Option::None::<#inner_output> {
                    #[allow(unreachable_code)]
                    return __ret;
                }
                let __ret: #inner_output = #block;
                #[allow(unreachable_code)]
                __ret
            }
        },
        Form::AsyncTrait(stmts) => {
            let mut stmts = stmts.clone();
            let mut retype = Retype { from: output.to_token_stream().to_string(), to: &inner_output };
            for stmt in &mut stmts {
                retype.visit_stmt_mut(stmt);
            }
            quote!(async move { #(#stmts)* })
        }
    };
    let core = quote! {
        use ::interceptor_runtime::__private as __icpt;
        let __icpt_method = {
            static __ICPT_SLOT: #rt::Slot = #rt::Slot::new();
            __ICPT_SLOT.get_or_init(
                || #rt::MethodInfo::new(#service, #method_name, #rt::RpcKind::#kind),
                || #chain,
            )
        };
        let mut #request = #request;
        #[allow(unused_mut)]
        let mut __icpt_call = match __icpt_method.start(&mut #request) {
            ::core::result::Result::Ok(call) => call,
            ::core::result::Result::Err(status) => return ::core::result::Result::Err(status),
        };
        #inbound
        let __icpt_result: #inner_output = __icpt_call.run(#body).await;
        #finish
    };
    let body = match handler.form {
        Form::AsyncFn => core,
        Form::AsyncTrait(_) => quote!(::std::boxed::Box::pin(async move { #core })),
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

/// The interceptors, in the order written: `Chain::new(a, Chain::new(b, c))`.
fn chain(items: &[Interceptor]) -> Result<TokenStream> {
    // Every interceptor that cannot be built is reported, not just the first.
    let (built, errors): (Vec<_>, Vec<_>) = items.iter().map(interceptor).partition(Result::is_ok);
    if let Some(error) = errors.into_iter().filter_map(Result::err).reduce(|mut all, e| {
        all.combine(e);
        all
    }) {
        return Err(error);
    }
    let mut iter = built.into_iter().filter_map(Result::ok).rev();
    let Some(last) = iter.next() else { return Ok(quote!(())) };
    Ok(iter.fold(last, |rest, first| quote!(__icpt::Chain::new(#first, #rest))))
}

fn interceptor(item: &Interceptor) -> Result<TokenStream> {
    let rt = quote!(__icpt);
    Ok(match item {
        Interceptor::Monitor(m) => {
            feature(&m.name, cfg!(any(test, feature = "monitor")))?;
            let warn_size = opt_int(m.warn_size);
            quote_spanned!(m.name.span()=> #rt::Monitor::new(#rt::MonitorConfig { warn_size: #warn_size }))
        }
        Interceptor::Rate(r) => {
            feature(&r.name, cfg!(any(test, feature = "rate")))?;
            let (recv, send, burst) = (opt_int(r.recv), opt_int(r.send), opt_int(r.burst));
            let scope = Ident::new(if r.per_method { "Method" } else { "Stream" }, r.name.span());
            let on_exceed = Ident::new(if r.reject { "Reject" } else { "Wait" }, r.name.span());
            quote_spanned! {r.name.span()=>
                #rt::Rate::new(#rt::RateConfig {
                    recv: #recv, send: #send, burst: #burst,
                    scope: #rt::RateScope::#scope, on_exceed: #rt::OnExceed::#on_exceed,
                })
            }
        }
        Interceptor::Budget(b) => {
            feature(&b.name, cfg!(any(test, feature = "budget")))?;
            let (messages, bytes, streams) = (opt_int(b.messages), opt_int(b.bytes), opt_int(b.streams));
            let (duration, idle) = (opt_duration(b.duration), opt_duration(b.idle));
            quote_spanned! {b.name.span()=>
                #rt::Budget::new(#rt::BudgetConfig {
                    messages: #messages, bytes: #bytes, duration: #duration, idle: #idle, streams: #streams,
                })
            }
        }
        Interceptor::With(expr) => with(expr),
    })
}

/// A user's interceptor, checked to implement the trait where it is written.
fn with(expr: &Expr) -> TokenStream {
    quote_spanned!(expr.span()=> __icpt::interceptor(#expr))
}

fn feature(name: &Ident, enabled: bool) -> Result<()> {
    if enabled {
        return Ok(());
    }
    Err(Error::new(
        name.span(),
        format!(
            "the `{name}` interceptor is behind the `{name}` feature of interceptor-runtime; enable it: \
             `interceptor-runtime = {{ version = \"0.1\", features = [\"{name}\"] }}`"
        ),
    ))
}

fn opt_int(n: Option<u64>) -> TokenStream {
    match n {
        Some(n) => {
            let n = attr::int(n);
            quote!(::core::option::Option::Some(#n))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn opt_duration(d: Option<std::time::Duration>) -> TokenStream {
    match d {
        Some(d) => {
            let nanos = attr::int(d.as_nanos() as u64);
            quote!(::core::option::Option::Some(::core::time::Duration::from_nanos(#nanos)))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// `route_chat` → `"RouteChat"`, the name tonic-build took the snake case of.
fn proto_name(ident: &Ident) -> String {
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    name.split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// `Result<Response<A>, E>` → `Result<Response<B>, E>`.
fn replace_response(output: &Type, with: &Type) -> Type {
    let mut output = output.clone();
    if let Some(slot) = first_generic_mut(&mut output, "Result").and_then(|ok| first_generic_mut(ok, "Response")) {
        *slot = with.clone();
    }
    output
}

fn first_generic_mut<'a>(ty: &'a mut Type, wrapper: &str) -> Option<&'a mut Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last_mut()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &mut last.arguments else { return None };
    match args.args.first_mut()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
}

/// Rewrites async_trait's own annotations of the output type (`None::<R>`,
/// `let __ret: R`), leaving the user's body (any nested block) alone.
struct Retype<'a> {
    from: String,
    to: &'a Type,
}

impl VisitMut for Retype<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if ty.to_token_stream().to_string() == self.from {
            *ty = self.to.clone();
        } else {
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }
    fn visit_block_mut(&mut self, _: &mut Block) {}
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        syn::visit_mut::visit_stmt_mut(self, stmt);
    }
}
