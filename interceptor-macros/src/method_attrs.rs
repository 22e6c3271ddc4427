//! A handler's own `#[intercept(..)]` attributes, also those behind
//! `#[cfg_attr(pred, intercept(..))]`, taken off the method so that it is
//! expanded once, with every option merged, and never a second time by an
//! attribute left on it.
//!
//! Input:
//! ```text
//! #[intercept(monitor)]                                  // the impl's
//! ..
//!     #[cfg_attr(feature = "limits", intercept(rate = 5), doc = "..")]
//!     async fn m(..) { body }
//! ```
//! Output: one expansion per combination of the conditions, each under its
//! `cfg`:
//! ```text
//!     #[cfg_attr(feature = "limits", doc = "..")]
//!     #[cfg(all(feature = "limits"))]      async fn m(..) { monitor, rate = 5 around body }
//!     #[cfg_attr(feature = "limits", doc = "..")]
//!     #[cfg(all(not(feature = "limits")))] async fn m(..) { monitor around body }
//! ```

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{punctuated::Punctuated, spanned::Spanned, Attribute, Error, Meta, Result, Token};

use crate::attr::Args;

/// At most this many `cfg_attr(.., intercept(..))` on one method: each
/// doubles the expansions.
const MAX_CONDITIONAL: usize = 3;

/// A method's attributes, its own `intercept`s taken out.
pub(crate) struct MethodAttrs {
    /// Everything else, as written (a `cfg_attr` without its `intercept`).
    pub(crate) kept: Vec<Attribute>,
    /// The `intercept`s in the order written, each with its condition.
    found: Vec<(Option<TokenStream>, Args)>,
}

/// One way the method is expanded: the attributes to give it and the
/// options it has.
pub(crate) struct Variant {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) args: Args,
}

impl MethodAttrs {
    pub(crate) fn take(attrs: Vec<Attribute>) -> Result<Self> {
        let mut taken = MethodAttrs { kept: Vec::with_capacity(attrs.len()), found: Vec::new() };
        for attr in attrs {
            if is_intercept(attr.path()) {
                taken.found.push((None, args_of(&attr.meta)?));
            } else if attr.path().is_ident("cfg_attr") {
                let Meta::List(list) = &attr.meta else {
                    taken.kept.push(attr);
                    continue;
                };
                let (predicate, metas) = list.parse_args_with(cfg_attr_args)?;
                let mut rest = Vec::new();
                split(predicate.clone(), metas, &mut rest, &mut taken.found)?;
                if !rest.is_empty() {
                    let mut kept = attr.clone();
                    kept.meta = syn::parse_quote!(cfg_attr(#predicate, #(#rest),*));
                    taken.kept.push(kept);
                }
            } else {
                taken.kept.push(attr);
            }
        }
        let conditional = taken.found.iter().filter(|(cond, _)| cond.is_some()).count();
        if conditional > MAX_CONDITIONAL {
            let span = taken.kept.first().map_or_else(proc_macro2::Span::call_site, |a| a.span());
            return Err(Error::new(
                span,
                format!(
                    "at most {MAX_CONDITIONAL} `cfg_attr(.., intercept(..))` on one handler; \
                     join their conditions (`cfg_attr(all(a, b), intercept(..))`)"
                ),
            ));
        }
        Ok(taken)
    }

    /// The expansions to make: `base` with the method's own options merged
    /// in, once per combination of their conditions.
    pub(crate) fn variants(&self, base: &Args) -> Vec<Variant> {
        let conditions: Vec<&TokenStream> = self.found.iter().filter_map(|(c, _)| c.as_ref()).collect();
        (0..1usize << conditions.len())
            .map(|mask| {
                let mut args = base.clone();
                let mut bit = 0;
                for (condition, own) in &self.found {
                    let applies = condition.is_none() || mask & (1 << bit) != 0;
                    bit += usize::from(condition.is_some());
                    if applies {
                        args = args.merge(own.clone());
                    }
                }
                let mut attrs = self.kept.clone();
                if !conditions.is_empty() {
                    let parts = conditions.iter().enumerate().map(|(at, c)| {
                        if mask & (1 << at) != 0 {
                            quote!(#c)
                        } else {
                            quote!(not(#c))
                        }
                    });
                    attrs.push(syn::parse_quote!(#[cfg(all(#(#parts),*))]));
                }
                Variant { attrs, args }
            })
            .collect()
    }
}

/// `intercept`, `interceptor_runtime::intercept`, ...
fn is_intercept(path: &syn::Path) -> bool {
    path.segments.last().is_some_and(|s| s.ident == "intercept")
}

fn args_of(meta: &Meta) -> Result<Args> {
    match meta {
        Meta::Path(_) => Ok(Args::default()),
        Meta::List(list) => list.parse_args::<Args>(),
        Meta::NameValue(nv) => Err(Error::new(nv.eq_token.span, "write `intercept(..)`")),
    }
}

/// `pred, attr, attr ..` of a `cfg_attr`.
fn cfg_attr_args(input: syn::parse::ParseStream) -> Result<(TokenStream, Punctuated<Meta, Token![,]>)> {
    let predicate: Meta = input.parse()?;
    input.parse::<Token![,]>()?;
    let metas = Punctuated::parse_terminated(input)?;
    Ok((predicate.into_token_stream(), metas))
}

/// Sorts the attributes of a `cfg_attr(predicate, ..)` into `intercept`s
/// (found under `predicate`) and the rest (kept); a nested `cfg_attr` is
/// sorted too, under both conditions.
fn split(
    predicate: TokenStream,
    metas: Punctuated<Meta, Token![,]>,
    kept: &mut Vec<TokenStream>,
    found: &mut Vec<(Option<TokenStream>, Args)>,
) -> Result<()> {
    for meta in metas {
        if is_intercept(meta.path()) {
            found.push((Some(predicate.clone()), args_of(&meta)?));
        } else if meta.path().is_ident("cfg_attr") {
            let Meta::List(list) = &meta else {
                kept.push(meta.into_token_stream());
                continue;
            };
            let (inner, nested) = list.parse_args_with(cfg_attr_args)?;
            let mut rest = Vec::new();
            split(quote!(all(#predicate, #inner)), nested, &mut rest, found)?;
            if !rest.is_empty() {
                kept.push(quote!(cfg_attr(#inner, #(#rest),*)));
            }
        } else {
            kept.push(meta.into_token_stream());
        }
    }
    Ok(())
}
