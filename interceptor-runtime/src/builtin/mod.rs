//! The interceptors `#[intercept(..)]` names: `monitor`, `rate`, `budget` and
//! `otel`, each behind the cargo feature of the same name. They are ordinary
//! [`Interceptor`](crate::Interceptor)s: what they do, a user's own can do.
//!
//! Each is public at the crate's root (`interceptor_runtime::monitor`, ...).

#[cfg(feature = "budget")]
pub mod budget;
#[cfg(any(feature = "rate", feature = "budget"))]
pub mod key;
#[cfg(feature = "monitor")]
pub mod monitor;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "rate")]
pub mod rate;
