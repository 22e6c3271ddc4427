//! Two interceptors written as a user would: a metadata token check that runs
//! before the handler, and a message validator.
//!
//! ```ignore
//! #[intercept(monitor, with = TokenCheck::bearer("secret"), with = NoteValidator::default())]
//! #[tonic::async_trait]
//! impl RouteGuide for SecureGuide { .. }
//! ```

use tonic::{metadata::MetadataMap, Status};

use interceptor_runtime::{CallContext, Direction, Interceptor, MessageRef};

use crate::pb::RouteNote;

/// Rejects a call whose `authorization` metadata is not `Bearer <token>` with
/// UNAUTHENTICATED, before the handler runs.
#[derive(Debug)]
pub struct TokenCheck {
    expected: String,
}

impl TokenCheck {
    /// Accepts `authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Self {
        TokenCheck { expected: format!("Bearer {token}") }
    }
}

impl Interceptor for TokenCheck {
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        "token_check"
    }

    fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        match metadata.get("authorization").map(|v| v.to_str()) {
            Some(Ok(value)) if value == self.expected => Ok(()),
            Some(_) => Err(Status::unauthenticated("the bearer token is not valid")),
            None => Err(Status::unauthenticated("missing `authorization: Bearer <token>` metadata")),
        }
    }

    fn on_stream(&self, _: &(), _: &CallContext, _: Direction) {}
}

/// Ends the call with INVALID_ARGUMENT when a client sends a [`RouteNote`]
/// with an empty message or one over `max_len` bytes; other messages pass.
#[derive(Debug)]
pub struct NoteValidator {
    /// The longest note message accepted.
    pub max_len: usize,
}

impl Default for NoteValidator {
    fn default() -> Self {
        NoteValidator { max_len: 256 }
    }
}

impl Interceptor for NoteValidator {
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        "note_validator"
    }

    fn on_start(&self, _: &CallContext, _: &MetadataMap) -> Result<(), Status> {
        Ok(())
    }

    fn on_stream(&self, _: &(), _: &CallContext, _: Direction) {}

    fn on_message<M: prost::Message + 'static>(
        &self,
        _: &(),
        _: &mut (),
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        let (Direction::Inbound, Some(note)) = (msg.direction(), msg.downcast::<RouteNote>()) else {
            return Ok(());
        };
        let problem = if note.message.is_empty() {
            "an empty message".to_owned()
        } else if note.message.len() > self.max_len {
            format!("a message of {} bytes (at most {})", note.message.len(), self.max_len)
        } else {
            return Ok(());
        };
        Err(Status::invalid_argument(format!("note #{} has {problem}", msg.index() + 1)))
    }
}
