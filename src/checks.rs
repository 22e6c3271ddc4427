//! The checks of the example services, written as a user would:
//! - [`TokenCheck`]: a bearer token in the metadata, compared in constant
//!   time, before the handler runs: the [`Interceptor`] trait at its
//!   shortest (two type lines, `name` and `on_start`);
//! - [`note_validator`]: every [`RouteNote`] a client sends, with
//!   [`validate`]: no downcast, other messages pass;
//! - [`quota`]: a quota lookup that awaits a (mock) remote service before
//!   the handler runs, with [`check_async`] and a time limit.
//!
//! ```text
//! #[intercept(monitor, with = TokenCheck::bearer("secret"), with = note_validator(256))]
//! #[tonic::async_trait]
//! impl RouteGuide for SecureGuide { .. }
//! ```

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use subtle::ConstantTimeEq;
use tonic::{metadata::MetadataMap, Status};

use interceptor_runtime::{check_async, validate, CallContext, Interceptor};

use crate::pb::RouteNote;

/// Rejects a call whose `authorization` metadata is not `Bearer <token>` with
/// UNAUTHENTICATED, before the handler runs.
#[derive(Debug)]
pub struct TokenCheck {
    expected: Vec<u8>,
}

impl TokenCheck {
    /// Accepts `authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Self {
        TokenCheck { expected: format!("Bearer {token}").into_bytes() }
    }
}

impl Interceptor for TokenCheck {
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        "token_check"
    }

    fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(given) = metadata.get("authorization") else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <token>` metadata"));
        };
        // In constant time, so that how long a wrong token takes to refuse
        // does not tell how much of it was right (its length is no secret).
        match bool::from(given.as_bytes().ct_eq(&self.expected)) {
            true => Ok(()),
            false => Err(Status::unauthenticated("the bearer token is not valid")),
        }
    }
}

/// Ends the call with INVALID_ARGUMENT when a client sends a [`RouteNote`]
/// with an empty message or one over `max_len` bytes; other messages pass.
pub fn note_validator(max_len: usize) -> impl Interceptor {
    validate(move |note: &RouteNote| match note.message.len() {
        0 => Err(Status::invalid_argument("a note's message may not be empty")),
        len if len > max_len => {
            Err(Status::invalid_argument(format!("a note's message of {len} bytes is too long (at most {max_len})")))
        }
        _ => Ok(()),
    })
    .named("note_validator")
}

/// A quota service that a server asks before each call, as it would a
/// remote one: a mock in the process, whose every answer takes a network
/// round trip (20 ms, on tokio's clock). Each client may make `calls` calls;
/// the client named `slow` gets no answer for 10 s, to show a timeout.
#[derive(Debug)]
pub struct QuotaService {
    calls: u32,
    used: Mutex<BTreeMap<String, u32>>,
}

/// The quota service of [`MeteredGuide`](crate::MeteredGuide): 3 calls per
/// client.
pub static QUOTAS: QuotaService = QuotaService::new(3);

impl QuotaService {
    /// Allows each client `calls` calls.
    pub const fn new(calls: u32) -> Self {
        QuotaService { calls, used: Mutex::new(BTreeMap::new()) }
    }

    /// Takes one call from `client`'s quota; `false` when none is left.
    pub async fn take(&self, client: &str) -> bool {
        let round_trip = if client == "slow" { Duration::from_secs(10) } else { Duration::from_millis(20) };
        tokio::time::sleep(round_trip).await;
        let mut used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let used = used.entry(client.to_owned()).or_default();
        *used += 1;
        *used <= self.calls
    }
}

/// Asks `service` for a call of the client named by the `x-client-id`
/// metadata before the handler runs: RESOURCE_EXHAUSTED when it has none
/// left, UNAUTHENTICATED when no client is named, and UNAVAILABLE when the
/// service does not answer within a second.
pub fn quota(service: &'static QuotaService) -> impl Interceptor {
    check_async(move |_, metadata| {
        // Taken from the metadata now: the future cannot borrow it.
        let client = metadata.get("x-client-id").and_then(|id| id.to_str().ok()).map(str::to_owned);
        async move {
            let Some(client) = client else { return Err(Status::unauthenticated("missing `x-client-id` metadata")) };
            match service.take(&client).await {
                true => Ok(()),
                false => {
                    Err(Status::resource_exhausted(format!("client `{client}` has used its {} calls", service.calls)))
                }
            }
        }
    })
    .named("quota")
    .timeout(Duration::from_secs(1))
}
