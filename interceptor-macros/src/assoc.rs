//! The impl's response stream types: `type XStream = S;` becomes
//! `type XStream = Outbound<S>;`, and inside the impl's handler bodies
//! `Self::XStream` is replaced by `S`, the type the body produces. So a body
//! that writes `Box::pin(s) as Self::XStream` (tonic's examples do) compiles
//! unchanged, whatever `S` is: a concrete stream, a boxed one, or an alias
//! of either.
//!
//! Input:
//! ```text
//! type FullDuplexCallStream = Stream<Reply>;     // a user alias of a boxed stream
//! async fn full_duplex_call(..) -> Result<Self::FullDuplexCallStream> {
//!     Ok(Response::new(Box::pin(s) as Self::FullDuplexCallStream))
//! }
//! ```
//! Output:
//! ```text
//! type FullDuplexCallStream = ::interceptor_runtime::Outbound<Stream<Reply>>;
//! async fn full_duplex_call(..) -> Result<Self::FullDuplexCallStream> {   // the signature as written
//!     .. Ok(Response::new(Box::pin(s) as Stream<Reply>)) ..
//! }
//! ```
//! The replacement works on tokens, so it also reaches into macro calls
//! (`try_stream! { .. }`). A type already written `Outbound<S>` is left as it
//! is, and so is `Self::XStream` for it (the body produces `S`). Code outside
//! the impl that names `<Svc as Trait>::XStream` sees the `Outbound`.
//!
//! A signature that writes `S` out (`-> Result<Stream<Reply>>`) would no
//! longer match the trait's once the type is wrapped: it is first rewritten
//! to name `Self::FullDuplexCallStream`, and then expanded as above.

use proc_macro2::{Group, Ident, Punct, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use syn::{spanned::Spanned, Error, ImplItem, ItemImpl, Type};

/// The impl's stream types that a handler returns as `Self::X`.
pub(crate) struct StreamTypes(Vec<(Ident, Type)>);

impl StreamTypes {
    pub(crate) fn none() -> Self {
        StreamTypes(Vec::new())
    }

    /// The impl's `type X = S;` that some handler's return type names as
    /// `Self::X` (or `<Self as Trait>::X`), and that are not `Outbound<..>`
    /// already.
    pub(crate) fn of(imp: &ItemImpl) -> Self {
        let outputs: Vec<TokenStream> = imp
            .items
            .iter()
            .filter_map(|item| match item {
                ImplItem::Fn(f) => Some(f.sig.output.to_token_stream()),
                _ => None,
            })
            .collect();
        let types = unwrapped(imp)
            .filter(|(ident, _)| outputs.iter().any(|out| names(out.clone(), ident)))
            .map(|(ident, ty)| (ident.clone(), ty.clone()))
            .collect();
        StreamTypes(types)
    }

    /// A handler that returns a stream type written out (`Result<Response<S>,
    /// Status>` where the impl has `type XStream = S;`) instead of
    /// `Self::XStream`: with the associated type wrapped, that signature
    /// would no longer match the trait's, so it is rewritten to name
    /// `Self::XStream`, the type tonic-build names after the method
    /// (`list_features` returns `Self::ListFeaturesStream`).
    ///
    /// Input: `type ListFeaturesStream = S; async fn list_features(..) -> Result<Response<S>, Status>`.
    /// Output: `.. async fn list_features(..) -> Result<Response<Self::ListFeaturesStream>, Status>`.
    ///
    /// A type written out in the signature of a handler that has no such
    /// associated type of its name is an error that says what to write.
    pub(crate) fn name_written_out(imp: &mut ItemImpl) -> Result<(), Error> {
        let types: Vec<(Ident, Vec<String>)> =
            unwrapped(imp).map(|(ident, ty)| (ident.clone(), words(ty.to_token_stream()))).collect();
        for item in &mut imp.items {
            let ImplItem::Fn(f) = item else { continue };
            let output = words(f.sig.output.to_token_stream());
            let written: Vec<&(Ident, Vec<String>)> = types.iter().filter(|(_, ty)| names_type(&output, ty)).collect();
            let Some(first) = written.first() else { continue };
            let Some((ident, ty)) = written.iter().find(|(ident, _)| is_named_after(ident, &f.sig.ident)) else {
                return Err(Error::new(
                    f.sig.output.span(),
                    format!(
                        "write the response stream as `Self::{}`: `#[intercept]` wraps the impl's \
                         `type {}` in `Outbound`, and this signature names the type it had",
                        first.0, first.0
                    ),
                ));
            };
            let named = quote::quote_spanned!(f.sig.output.span()=> Self::#ident);
            let output = replace_type(f.sig.output.to_token_stream(), ty, &named);
            f.sig.output = syn::parse2(output)?;
        }
        Ok(())
    }

    /// Whether `X` is one of them.
    pub(crate) fn contains(&self, ident: &Ident) -> bool {
        self.0.iter().any(|(i, _)| i == ident)
    }

    /// `Self::X` → `S` in `tokens`.
    pub(crate) fn substitute(&self, tokens: TokenStream) -> TokenStream {
        if self.0.is_empty() {
            return tokens;
        }
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut out = TokenStream::new();
        let mut i = 0;
        while i < tokens.len() {
            if let Some((len, ty)) = self.self_path_at(&tokens, i) {
                let path_follows = is_path_sep(&tokens, i + len);
                if path_follows {
                    // `Self::X::new(..)` → `<S>::new(..)`
                    out.extend([TokenTree::Punct(Punct::new('<', Spacing::Alone))]);
                    ty.to_tokens(&mut out);
                    out.extend([TokenTree::Punct(Punct::new('>', Spacing::Alone))]);
                } else {
                    ty.to_tokens(&mut out);
                }
                i += len;
                continue;
            }
            match &tokens[i] {
                TokenTree::Group(g) => {
                    let mut group = Group::new(g.delimiter(), self.substitute(g.stream()));
                    group.set_span(g.span());
                    out.extend([TokenTree::Group(group)]);
                }
                other => out.extend([other.clone()]),
            }
            i += 1;
        }
        out
    }

    /// `Self :: X` or `< Self as Path > :: X` at `i`: its length in tokens
    /// and `X`'s type.
    fn self_path_at(&self, tokens: &[TokenTree], i: usize) -> Option<(usize, &Type)> {
        if i >= 2 && is_path_sep(tokens, i - 2) {
            return None; // `a::Self::X` is not ours
        }
        let (start, len) = match &tokens[i] {
            TokenTree::Ident(s) if s == "Self" => (i + 1, 1),
            TokenTree::Punct(p) if p.as_char() == '<' => {
                let is_self_as = matches!(tokens.get(i + 1), Some(TokenTree::Ident(s)) if s == "Self")
                    && matches!(tokens.get(i + 2), Some(TokenTree::Ident(a)) if a == "as");
                if !is_self_as {
                    return None;
                }
                let close = closing_angle(tokens, i)?;
                (close + 1, close + 1 - i)
            }
            _ => return None,
        };
        if !is_path_sep(tokens, start) {
            return None;
        }
        let TokenTree::Ident(name) = tokens.get(start + 2)? else { return None };
        let (_, ty) = self.0.iter().find(|(ident, _)| ident == name)?;
        Some((len + 3, ty))
    }
}

/// The `>` that closes the `<` at `open`.
fn closing_angle(tokens: &[TokenTree], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (at, token) in tokens.iter().enumerate().skip(open) {
        if let TokenTree::Punct(p) = token {
            match p.as_char() {
                '<' => depth += 1,
                '>' if at > 0 && is_arrow_head(tokens, at) => {}
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(at);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// The `>` of `->`.
fn is_arrow_head(tokens: &[TokenTree], at: usize) -> bool {
    matches!(&tokens[at - 1], TokenTree::Punct(p) if p.as_char() == '-' && p.spacing() == Spacing::Joint)
}

/// `::` at `i`.
fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!(
        (tokens.get(i), tokens.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

/// Whether `tokens` name `Self::ident` (or `<Self as ..>::ident`).
fn names(tokens: TokenStream, ident: &Ident) -> bool {
    let probe = StreamTypes(vec![(ident.clone(), syn::parse_quote!(()))]);
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    (0..tokens.len()).any(|i| probe.self_path_at(&tokens, i).is_some())
        || tokens.iter().any(|t| matches!(t, TokenTree::Group(g) if names(g.stream(), ident)))
}

/// Tokens as words (a group's delimiters included), to compare types as
/// written.
fn words(tokens: TokenStream) -> Vec<String> {
    let mut out = Vec::new();
    for token in tokens {
        match token {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push(open.to_owned());
                out.extend(words(g.stream()));
                out.push(close.to_owned());
            }
            other => out.push(other.to_string()),
        }
    }
    out
}

/// Whether `stream` is the response stream type tonic-build names after
/// the handler `method`: `ListFeaturesStream` for `list_features`, compared
/// without case or underscores (`GetHTTPInfoStream` for `get_http_info`).
fn is_named_after(stream: &Ident, method: &Ident) -> bool {
    let squash = |name: String| name.replace('_', "").to_lowercase();
    let method = method.to_string();
    let method = method.strip_prefix("r#").unwrap_or(&method);
    squash(stream.to_string()) == squash(format!("{method}Stream"))
}

/// `tokens` with each whole occurrence of the type `ty` (its words, as
/// [`names_type`] finds it) replaced by `with`.
fn replace_type(tokens: TokenStream, ty: &[String], with: &TokenStream) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let is_colon = |tree: Option<&TokenTree>| matches!(tree, Some(TokenTree::Punct(p)) if p.as_char() == ':');
    let mut out = TokenStream::new();
    let mut i = 0;
    while i < trees.len() {
        // The trees from `i` whose words are exactly `ty`'s, if any.
        let mut seen = Vec::new();
        let mut end = None;
        for (j, tree) in trees.iter().enumerate().skip(i) {
            seen.extend(words(TokenStream::from(tree.clone())));
            if seen.len() >= ty.len() {
                if seen == ty {
                    end = Some(j + 1);
                }
                break;
            }
        }
        // Not the tail of a path (`a::S`), nor its head (`S::Item`).
        let after_path = i >= 1 && is_colon(trees.get(i - 1));
        if let Some(end) = end.filter(|&end| !after_path && !is_colon(trees.get(end))) {
            out.extend(with.clone());
            i = end;
            continue;
        }
        match &trees[i] {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), replace_type(g.stream(), ty, with));
                group.set_span(g.span());
                out.extend([TokenTree::Group(group)]);
            }
            other => out.extend([other.clone()]),
        }
        i += 1;
    }
    out
}

/// Whether `ty`'s words stand in `output` as a whole type: not the tail of
/// a longer path (`a::S`).
fn names_type(output: &[String], ty: &[String]) -> bool {
    !ty.is_empty()
        && output.windows(ty.len()).enumerate().any(|(at, window)| {
            window == ty
                && !(at >= 1 && output[at - 1] == ":")
                && !(at + ty.len() < output.len() && output[at + ty.len()] == ":")
        })
}

/// The impl's associated types that are not `Outbound<..>` already: each
/// name with its type.
fn unwrapped(imp: &ItemImpl) -> impl Iterator<Item = (&Ident, &Type)> {
    imp.items.iter().filter_map(|item| match item {
        ImplItem::Type(t) if !is_outbound(&t.ty) => Some((&t.ident, &t.ty)),
        _ => None,
    })
}

/// `Outbound<S>`, written by the user: already wrapped.
fn is_outbound(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Outbound"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn types() -> StreamTypes {
        StreamTypes(vec![
            (syn::parse_quote!(ChatStream), syn::parse_quote!(Stream<Note>)),
            (syn::parse_quote!(ListStream), syn::parse_quote!(ReceiverStream<Result<Feature, Status>>)),
        ])
    }

    #[test]
    fn a_written_out_type_is_replaced_where_it_stands_whole() {
        let ty = words(quote!(Chat<Note>));
        let out = replace_type(quote!(Result<Chat<Note>, (pb::Chat<Note>, Chat<Note>::Item)>), &ty, &quote!(Self::X));
        assert_eq!(out.to_string().replace(' ', ""), "Result<Self::X,(pb::Chat<Note>,Chat<Note>::Item)>");
    }

    #[test]
    fn self_paths_become_the_written_type() {
        let body = quote! {
            let s: Self::ChatStream = Box::pin(x) as Self::ChatStream;
            let t = <Self as Svc>::ListStream::new(rx);
            try_stream! { yield Self::ListStream::new(rx) as Self::OtherStream };
            other::Self::ChatStream
        };
        let out = types().substitute(body).to_string().replace(' ', "");
        assert_eq!(
            out,
            quote! {
                let s: Stream<Note> = Box::pin(x) as Stream<Note>;
                let t = <ReceiverStream<Result<Feature, Status> > >::new(rx);
                try_stream! { yield <ReceiverStream<Result<Feature, Status> > >::new(rx) as Self::OtherStream };
                other::Self::ChatStream
            }
            .to_string()
            .replace(' ', "")
        );
    }

    #[test]
    fn a_return_type_names_its_stream_through_aliases() {
        let id: Ident = syn::parse_quote!(ChatStream);
        assert!(names(quote!(-> Result<Self::ChatStream>), &id));
        assert!(names(quote!(-> EchoResult<<Self as Echo>::ChatStream>), &id));
        assert!(!names(quote!(-> Result<Self::ChatStreams>), &id));
        assert!(!names(quote!(-> Result<Response<Note>, Status>), &id));
    }
}
