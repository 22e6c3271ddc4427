//! `#[intercept(..)]`: message-level interceptors for tonic handlers.
//!
//! Use it through `interceptor-runtime`, which re-exports it and holds the
//! types the expansion calls; its documentation describes the attribute.
//!
//! - [`builtins`]: the built-in interceptors, one row each, which the
//!   grammar, its errors and the code generated all read.
//! - [`attr`]: the argument grammar.
//! - [`handler`]: recognising a handler's shape (as written, or as
//!   `#[tonic::async_trait]` rewrote it); its types are left to the compiler.
//! - [`method_attrs`]: a method's own `#[intercept]`s, also under `cfg_attr`.
//! - [`assoc`]: the impl's `type XStream` and `Self::XStream` in its bodies.
//! - [`expand`]: the code generated around the unchanged body.

mod assoc;
mod attr;
mod builtins;
mod expand;
mod handler;
mod method_attrs;

use proc_macro::TokenStream;

/// Wraps a tonic service's handlers, or one handler, with interceptors.
///
/// See `interceptor_runtime` for the grammar and what the expansion does.
#[proc_macro_attribute]
pub fn intercept(args: TokenStream, item: TokenStream) -> TokenStream {
    let original: proc_macro2::TokenStream = item.clone().into();
    match expand::intercept(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        // The item is kept as written so that its other errors (a missing
        // trait method ...) do not pile onto this one.
        Err(err) => {
            let mut tokens = err.to_compile_error();
            tokens.extend(original);
            tokens.into()
        }
    }
}

#[cfg(test)]
mod tests;
