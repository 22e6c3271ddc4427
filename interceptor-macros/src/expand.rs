//! Code generation: a handler gets a short prologue and epilogue around its
//! unchanged body, calling `interceptor_runtime::__private`.
//!
//! # What is read from the syntax, and what from the types
//! The macro reads no type. It hands the request's and the return type, as
//! written (through any alias: `type Result<T> = ..`,
//! `type Streaming<T> = Request<tonic::Streaming<T>>`, `tonic::Result<..>`),
//! to the runtime's dispatch, and the compiler picks the code for them: a
//! client stream or one request, a response stream or one message, and the
//! `RpcKind` from those two choices (see the runtime's `dispatch` module).
//! A type it cannot handle is a compile error at that type, saying what to
//! write.
//!
//! Syntax is read only where the macro must rewrite something: the impl's
//! `type XStream = S;`, which becomes `Outbound<S>`, and `Self::XStream` in
//! its handler bodies, which becomes `S` (see [`crate::assoc`]); the
//! method's own `#[intercept]`s (also under `cfg_attr`), merged into one
//! expansion ([`crate::method_attrs`]); and async_trait's rewrite of a
//! method, when the attribute comes after it.
//!
//! # When option values are evaluated
//! A literal is checked at compile time and written into the expansion. Any
//! other expression is evaluated when the method's interceptors are built,
//! on the method's first call; one that mentions `self` on every call, and
//! the method's interceptors are then looked up by the values (the
//! runtime's `Methods`), so calls with equal values share them (and a
//! `scope = method` limiter, `streams` slots). A bad value ends the call
//! with INTERNAL (logged once per method), never a panic.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{
    parse_quote, spanned::Spanned, Attribute, Block, Error, Expr, Ident, ImplItem, ImplItemFn, Item, ItemImpl, Pat,
    Result, Signature, Visibility,
};

use crate::{
    assoc::StreamTypes,
    attr::{self, Args, Configured, Item as Interceptor, Value},
    builtins::Kind,
    handler::{self, Form, Handler},
    method_attrs::MethodAttrs,
};

/// The attribute's entry point: an impl or a single handler.
pub(crate) fn intercept(args: TokenStream, item: TokenStream) -> Result<TokenStream> {
    let args: Args = syn::parse2(args)?;
    let item: Item = syn::parse2(item).map_err(|e| Error::new(e.span(), format!("{e}; {PLACE}")))?;
    match item {
        Item::Impl(imp) => expand_impl(args, imp),
        Item::Fn(f) => {
            let site =
                Site { args, guessed_service: quote!(__icpt::type_name_of::<Self>()), streams: StreamTypes::none() };
            let methods = site.method(f.attrs, &f.vis, &f.sig, &f.block)?;
            Ok(quote!(#(#methods)*))
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

/// Where the handlers being expanded are: the impl's options, the service
/// name to guess when neither the attribute nor the request gives one, and
/// the impl's stream types.
struct Site {
    args: Args,
    guessed_service: TokenStream,
    streams: StreamTypes,
}

/// The service names the macro knows for a handler: the one written
/// (`service = ..`), which wins over the request's, and the guess, used when
/// the request names no method (see the runtime's `expansion::names`).
struct Names<'a> {
    given: Option<TokenStream>,
    guess: &'a TokenStream,
}

impl Names<'_> {
    /// `Names::given(SERVICE, "Method")` or `Names::guessed(GUESS, "Method")`.
    fn of(&self, method_name: &str) -> TokenStream {
        match &self.given {
            Some(service) => quote!(__icpt::Names::given(#service, #method_name)),
            None => {
                let guess = self.guess;
                quote!(__icpt::Names::guessed(#guess, #method_name))
            }
        }
    }
}

/// Input:
/// ```text
/// #[intercept(monitor)] #[tonic::async_trait]
/// impl route_guide_server::RouteGuide for Guide {
///     type RouteChatStream = S;
///     #[intercept(rate = 10)] async fn route_chat(..) -> Result<Response<Self::RouteChatStream>, Status> { body }
///     async fn get_feature(..) { body }
/// }
/// ```
/// Output: every handler expanded as by [`Site::method`] with the impl's
/// interceptors followed by its own, and `type RouteChatStream =
/// Outbound<S>;` (see [`crate::assoc`]).
fn expand_impl(args: Args, mut imp: ItemImpl) -> Result<TokenStream> {
    let Some((_, trait_path, _)) = &imp.trait_ else {
        return Err(Error::new(
            imp.self_ty.span(),
            "`#[intercept]` on an impl needs the impl of a tonic service trait, \
             e.g. `impl route_guide_server::RouteGuide for Guide`",
        ));
    };
    // tonic-build puts `pub const SERVICE_NAME` beside the trait.
    let guessed_service = if trait_path.segments.len() >= 2 {
        let mut module = trait_path.clone();
        module.segments.pop();
        quote!(#module SERVICE_NAME)
    } else {
        let name = trait_path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        quote!(#name)
    };
    StreamTypes::name_written_out(&mut imp)?;
    let site = Site { args, guessed_service, streams: StreamTypes::of(&imp) };

    let mut errors: Vec<Error> = Vec::new();
    let mut items = Vec::with_capacity(imp.items.len());
    for item in std::mem::take(&mut imp.items) {
        match item {
            // Every fn of a tonic service impl is a handler: one that does
            // not look like one is an error, never silently left alone.
            ImplItem::Fn(f) => match site.method(f.attrs, &f.vis, &f.sig, &f.block) {
                Ok(methods) => {
                    for method in methods {
                        match syn::parse2::<ImplItemFn>(method) {
                            Ok(method) => items.push(ImplItem::Fn(method)),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            },
            ImplItem::Type(mut t) if site.streams.contains(&t.ident) => {
                let ty = &t.ty;
                t.ty = parse_quote!(::interceptor_runtime::Outbound<#ty>);
                items.push(ImplItem::Type(t));
            }
            other => items.push(other),
        }
    }
    if let Some(mut first) = errors.pop() {
        for e in errors {
            first.combine(e);
        }
        return Err(first);
    }
    imp.items = items;
    Ok(imp.into_token_stream())
}

impl Site {
    /// One handler, expanded once per combination of the conditions of its
    /// own `cfg_attr(.., intercept(..))`s (once when it has none).
    fn method(
        &self,
        attrs: Vec<Attribute>,
        vis: &Visibility,
        sig: &Signature,
        block: &Block,
    ) -> Result<Vec<TokenStream>> {
        let attrs = MethodAttrs::take(attrs)?;
        let handler = handler::recognise(sig, block)?;
        attrs
            .variants(&self.args)
            .into_iter()
            .map(|variant| {
                let names =
                    Names { given: variant.args.service.as_ref().map(|s| quote!(#s)), guess: &self.guessed_service };
                expand_fn(&variant.args, &names, &variant.attrs, vis, sig, block, &handler, &self.streams)
            })
            .collect()
    }
}

/// Input: `async fn m(&self, request: In) -> Out { body }` (or async_trait's
/// rewrite of it, `fn m<..>(..) -> Pin<Box<dyn Future<Output = Out> ..>> {
/// Box::pin(async move { .. }) }`).
///
/// Output, the same signature, and:
/// ```text
/// let in = in_shape(probe of In);  let out = out_shape(probe of Out);   // chosen by the compiler
/// static SLOT; let method = SLOT.get_or_init(info(kind(&in, &out)), || Chain::new(a, Chain::new(b, c)));
/// let mut call = method.start(&mut request).await?;          // on_start hooks, then the async checks
/// let request = in.receive(&mut call, request).await?;       // Streaming<T> -> Inbound<T>, or the message's hooks
/// let result = call.run(async move { out.hinted(body) }).await;   // the timers beside it
/// out.finish(call, result).await                             // S -> Outbound<S>, or the message's hooks
/// ```
/// (async_trait's shape gets the same, inside its `Box::pin(async move { .. })`).
#[allow(clippy::too_many_arguments)]
fn expand_fn(
    args: &Args,
    names: &Names<'_>,
    attrs: &[Attribute],
    vis: &Visibility,
    sig: &Signature,
    block: &Block,
    handler: &Handler,
    streams: &StreamTypes,
) -> Result<TokenStream> {
    let method_name = proto_name(&sig.ident);
    let receiver = match sig.inputs.first() {
        Some(syn::FnArg::Receiver(r)) => r.self_token.span,
        _ => Span::call_site(),
    };
    // The user's pattern is bound to the request as the body sees it, so
    // `request`, `mut request` and `_` all work. A name keeps its place in
    // the signature (without `mut`, which the pattern applies), so that an
    // attribute that reads the parameters, like `#[tracing::instrument(skip(request))]`,
    // finds it; any other pattern is replaced by a name of the macro's.
    let pattern = &handler.request;
    let request = match pattern {
        Pat::Ident(named) if named.by_ref.is_none() && named.subpat.is_none() => named.ident.clone(),
        _ => Ident::new("__icpt_request", Span::call_site()),
    };
    let mut sig = sig.clone();
    if let Some(syn::FnArg::Typed(arg)) = sig.inputs.iter_mut().nth(1) {
        *arg.pat = parse_quote!(#request);
    }
    let method = method(args, &names.of(&method_name), receiver, &request)?;
    // The chain must be an interceptor: only a `with` value can fail to be
    // one, and that error is reported at it; the places that require it
    // point there too, so that the compiler reports it once.
    let checked = chain_span(args);
    let start = Ident::new("start", checked);
    let in_probe = {
        let ty = &handler.request_type;
        quote_spanned!(ty.span()=> __icpt::in_shape((&&__icpt::request_probe::<#ty>(&#request)).__icpt_in()))
    };
    let (out_probe, finish) = {
        let ty = &handler.output;
        (
            quote_spanned!(ty.span()=> __icpt::out_shape((&&__icpt::reply_probe::<#ty>()).__icpt_out())),
            // At the return type too: a stream type that cannot be wrapped
            // is reported there.
            quote_spanned!(ty.span()=> __icpt_out.finish(__icpt_call, __icpt_result)),
        )
    };
    // The body keeps its own statements; `Self::XStream` in it is the type
    // the impl wrote (see `assoc`), and it is given the type it produces.
    let body = match &handler.form {
        Form::AsyncFn => {
            let block = streams.substitute(block.to_token_stream());
            quote! {
                let __ret = __icpt_out.hinted(#block);
                #[allow(unreachable_code)]
                __ret
            }
        }
        Form::AsyncTrait { before, body, after } => {
            let body = streams.substitute(quote!(#(#before)* let __ret = __icpt_out.hinted(#body); #(#after)*));
            quote!(#body)
        }
    };
    let core = quote! {
        use ::interceptor_runtime::__private as __icpt;
        #[allow(unused_imports)]
        use ::interceptor_runtime::__private::prelude::*;
        let __icpt_in = #in_probe;
        let __icpt_out = #out_probe;
        let __icpt_kind = __icpt::kind(&__icpt_in, &__icpt_out);
        let __icpt_method = #method;
        let mut #request = #request;
        let mut __icpt_call = match __icpt_method.#start(&mut #request).await {
            ::core::result::Result::Ok(call) => call,
            ::core::result::Result::Err(status) => return ::core::result::Result::Err(status),
        };
        let #pattern = match __icpt_in.receive(&mut __icpt_call, #request).await {
            ::core::result::Result::Ok(request) => request,
            ::core::result::Result::Err(status) => return ::core::result::Result::Err(status),
        };
        let __icpt_result = __icpt_call
            .run(async move {
                if let ::core::option::Option::Some(__ret) = __icpt_out.none() {
                    #[allow(unreachable_code)]
                    return __ret;
                }
                #body
            })
            .await;
        #finish.await
    };
    let body = match handler.form {
        Form::AsyncFn => core,
        Form::AsyncTrait { .. } => quote!(::std::boxed::Box::pin(async move { #core })),
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

/// The method's interceptors, built once per method, or per distinct value
/// of the options that mention `self`; its `MethodInfo` is built from the
/// request that builds them (`names` is `Names::guessed(..)` or
/// `Names::given(..)`):
/// ```text
/// { static SLOT: Slot; SLOT.get_or_init(|| names.info(&request, kind), || chain) }   // every value a literal
/// { static METHODS: Methods;                                             // some expressions
///   let k0 = int("rate", self.limits.chat)?;                             //   per call: those with `self`
///   METHODS.get((k0,), || names.info(&request, kind), |key| { let o1 = size("budget(bytes)", MAX)?; Ok(chain) })? }
/// ```
fn method(args: &Args, names: &TokenStream, receiver: Span, request: &Ident) -> Result<TokenStream> {
    let checked = chain_span(args);
    let (get_or_init, get) = (Ident::new("get_or_init", checked), Ident::new("get", checked));
    let info = quote!(|| #names.info(&#request, __icpt_kind));
    let mut values = Values::default();
    let chain = chain(&args.items, &mut values)?;
    if values.once.is_empty() && values.per_call.is_empty() {
        return Ok(quote! {{
            static __ICPT_SLOT: __icpt::Slot = __icpt::Slot::new();
            __ICPT_SLOT.#get_or_init(#info, || #chain)
        }});
    }
    let keys: Vec<Ident> = (0..values.per_call.len()).map(|n| format_ident!("__icpt_k{n}")).collect();
    let evaluate = values.per_call.iter().zip(&keys).map(|(value, key)| {
        let PerCall { convert, fallible, .. } = value;
        // `self` in the attribute is the method's receiver, also when the
        // attribute and the method come from different macro contexts.
        let convert = respan_self(convert.clone(), receiver);
        if !fallible {
            return quote!(let #key = #convert;);
        }
        quote! {
            let #key = match #convert {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(bad) => {
                    return ::core::result::Result::Err(__ICPT_METHODS.bad(#names, &#request, bad))
                }
            };
        }
    });
    let from_key = values.per_call.iter().enumerate().map(|(n, value)| {
        let (var, n) = (&value.var, syn::Index::from(n));
        quote!(let #var = ::core::clone::Clone::clone(&__icpt_key.#n);)
    });
    let once = values.once.iter().map(|(var, convert)| quote!(let #var = #convert;));
    let key_param = if keys.is_empty() { quote!(_) } else { quote!(__icpt_key) };
    // The values must compare: an error about it points at the first.
    let key = quote_spanned!(values.per_call.first().map_or_else(Span::call_site, |v| v.span)=> (#(#keys,)*));
    Ok(quote! {{
        static __ICPT_METHODS: __icpt::Methods = __icpt::Methods::new();
        #(#evaluate)*
        match __ICPT_METHODS.#get(
            #key,
            #info,
            |#key_param| -> ::core::result::Result<_, __icpt::BadOption> {
                #(#from_key)*
                #(#once)*
                ::core::result::Result::Ok(#chain)
            },
        ) {
            ::core::result::Result::Ok(method) => method,
            ::core::result::Result::Err(status) => return ::core::result::Result::Err(status),
        }
    }})
}

/// Every `self` in `tokens`, resolved as the method's receiver.
fn respan_self(tokens: TokenStream, receiver: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            // Resolved as the receiver, shown where it was written.
            TokenTree::Ident(i) if i == "self" => TokenTree::Ident(Ident::new("self", receiver.located_at(i.span()))),
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), respan_self(g.stream(), receiver));
                group.set_span(g.span());
                TokenTree::Group(group)
            }
            other => other,
        })
        .collect()
}

/// Where the errors of a chain that is not an interceptor point: its first
/// `with` value.
fn chain_span(args: &Args) -> Span {
    args.items
        .iter()
        .find_map(|item| match item {
            Interceptor::With(expr) => Some(expr.span()),
            Interceptor::Builtin(_) => None,
        })
        .unwrap_or_else(Span::call_site)
}

/// The option values that are expressions: each is bound to a variable the
/// chain uses.
#[derive(Default)]
struct Values {
    /// Evaluated when the interceptors are built: `(variable, conversion)`.
    once: Vec<(Ident, TokenStream)>,
    /// Evaluated on every call, the method looked up by them.
    per_call: Vec<PerCall>,
}

struct PerCall {
    /// The variable the chain uses, taken from the key.
    var: Ident,
    /// The expression's.
    span: Span,
    /// `Result<value, BadOption>`, or the value when it cannot fail.
    convert: TokenStream,
    fallible: bool,
}

impl Values {
    /// The variable that holds `expr`, converted by `convert` (a `Result`
    /// with a `BadOption`).
    fn bind(&mut self, expr: &Expr, convert: TokenStream) -> Ident {
        let var = format_ident!("__icpt_o{}", self.once.len() + self.per_call.len());
        if attr::mentions_self(expr) {
            self.per_call.push(PerCall { var: var.clone(), span: expr.span(), convert, fallible: true });
        } else {
            self.once.push((var.clone(), quote!(#convert?)));
        }
        var
    }

    /// The variable that holds `expr`, evaluated on every call: a `with`
    /// value, which cannot be bad.
    fn bind_per_call(&mut self, expr: &Expr, value: TokenStream) -> Ident {
        let var = format_ident!("__icpt_o{}", self.once.len() + self.per_call.len());
        self.per_call.push(PerCall { var: var.clone(), span: expr.span(), convert: value, fallible: false });
        var
    }
}

/// The interceptors, in run order (see [`in_run_order`]): `Chain::new(a, Chain::new(b, c))`.
fn chain(items: &[Interceptor], values: &mut Values) -> Result<TokenStream> {
    // Every interceptor that cannot be built is reported, not just the first.
    let mut built = Vec::new();
    let mut error: Option<Error> = None;
    for item in in_run_order(items) {
        match interceptor(item, values) {
            Ok(tokens) => built.push(tokens),
            Err(e) => match &mut error {
                Some(all) => all.combine(e),
                None => error = Some(e),
            },
        }
    }
    if let Some(error) = error {
        return Err(error);
    }
    let mut iter = built.into_iter().rev();
    let Some(last) = iter.next() else { return Ok(quote!(())) };
    Ok(iter.fold(last, |rest, first| quote!(__icpt::Chain::new(#first, #rest))))
}

/// The order the chain runs them in: as written, except that a built-in
/// that `runs_first` (`otel`) moves ahead of the rest (a stable sort, so
/// several such keep their order).
///
/// Input: `monitor, with = Auth, otel`. Output: `otel, monitor, with = Auth`.
fn in_run_order(items: &[Interceptor]) -> Vec<&Interceptor> {
    let mut ordered: Vec<&Interceptor> = items.iter().collect();
    ordered.sort_by_key(|item| !matches!(item, Interceptor::Builtin(b) if b.row.runs_first));
    ordered
}

fn interceptor(item: &Interceptor, values: &mut Values) -> Result<TokenStream> {
    match item {
        Interceptor::Builtin(b) => builtin(b, values),
        Interceptor::With(expr) => Ok(with(expr, values)),
    }
}

/// `Rate::new(RateConfig { recv: Some(10), send: Some(10), ..Default::default() })`,
/// as the table's row says.
fn builtin(b: &Configured, values: &mut Values) -> Result<TokenStream> {
    let row = b.row;
    if !row.enabled {
        return Err(Error::new(
            b.name.span(),
            format!(
                "the `{name}` interceptor is behind the `{feature}` feature of interceptor-runtime; enable it: \
                 `interceptor-runtime = {{ .., features = [\"{feature}\"] }}`",
                name = row.name,
                feature = row.feature,
            ),
        ));
    }
    let mut fields = Vec::new();
    for setting in &b.settings {
        let value = match &setting.value {
            Value::Int(n) => {
                let n = attr::int(*n);
                quote!(#n)
            }
            Value::Duration(d) => {
                let nanos = attr::int(d.as_nanos() as u64);
                quote!(::core::time::Duration::from_nanos(#nanos))
            }
            Value::Choice(path) => {
                let path: syn::Path = syn::parse_str(path)?;
                quote!(__icpt::#path)
            }
            Value::Tokens(tokens) => tokens.clone(),
            Value::Expr(expr) => {
                let label = &setting.label;
                let convert = match setting.kind {
                    Kind::Int => quote_spanned!(expr.span()=> __icpt::int(#label, #expr)),
                    Kind::Size => quote_spanned!(expr.span()=> __icpt::size(#label, #expr)),
                    Kind::Duration => quote_spanned!(expr.span()=> __icpt::duration(#label, #expr)),
                    Kind::Key => quote_spanned!(expr.span()=> __icpt::metadata_key(#label, #expr)),
                    Kind::Backend => quote_spanned!(expr.span()=> __icpt::backend(#label, #expr)),
                    // `attr` reads a choice as a word and a key function as
                    // tokens, never as an expression to convert.
                    Kind::Choice(_) | Kind::KeyFn => return Err(Error::new(expr.span(), "expected a word")),
                };
                let var = values.bind(expr, convert);
                quote!(#var)
            }
        };
        let value = match setting.kind {
            Kind::Choice(_) => value,
            _ => quote!(::core::option::Option::Some(#value)),
        };
        for field in setting.fields {
            let field = Ident::new(field, Span::call_site());
            fields.push(quote!(#field: #value));
        }
    }
    let interceptor = Ident::new(row.interceptor, b.name.span());
    let config = Ident::new(row.config, b.name.span());
    // The options are the config's fields: those not given keep their
    // default (and when all are given, there is nothing to fill in).
    let given = b.settings.iter().flat_map(|s| s.fields).count();
    if fields.is_empty() {
        return Ok(quote_spanned!(b.name.span()=> __icpt::#interceptor::new(::core::default::Default::default())));
    }
    let rest = (given < row.options.len()).then(|| quote!(..::core::default::Default::default()));
    Ok(quote_spanned! {b.name.span()=>
        __icpt::#interceptor::new(__icpt::#config {
            #(#fields,)*
            #rest
        })
    })
}

/// A user's interceptor, checked to implement the trait where it is
/// written; per call when it mentions `self`.
fn with(expr: &Expr, values: &mut Values) -> TokenStream {
    if attr::mentions_self(expr) {
        let var = values.bind_per_call(expr, quote_spanned!(expr.span()=> __icpt::with_per_call(#expr)));
        quote_spanned!(expr.span()=> __icpt::with(#var))
    } else {
        quote_spanned!(expr.span()=> __icpt::with(#expr))
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
