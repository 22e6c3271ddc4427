//! [`validate`]: a check of the messages of one type, from a closure.

use std::{fmt, marker::PhantomData};

use tonic::Status;

use crate::interceptor::{Direction, Interceptor, MessageRef};

/// An interceptor that checks every message of type `M` the client sends
/// with `check`; `Err` ends the call with that status (INVALID_ARGUMENT,
/// typically) before the handler gets the message. Messages of other types
/// pass, and so do the handler's responses, unless
/// [`outbound`](Validate::outbound) or [`both_ways`](Validate::both_ways)
/// says otherwise. Named `validate` unless [`named`](Validate::named).
///
/// The type is told apart when the code is compiled: a handler whose
/// messages are of another type pays nothing for it.
///
/// ```
/// use interceptor_runtime::validate;
/// use tonic::Status;
///
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # struct RouteNote { #[prost(string, tag = "1")] message: String }
/// let notes = validate(|note: &RouteNote| match note.message.len() {
///     0 => Err(Status::invalid_argument("a note must say something")),
///     1..=256 => Ok(()),
///     n => Err(Status::invalid_argument(format!("a note of {n} bytes is too long (at most 256)"))),
/// })
/// .named("note_validator");
/// # let _ = notes;
/// ```
pub fn validate<M, F>(check: F) -> Validate<M, F>
where
    M: prost::Message + 'static,
    F: Fn(&M) -> Result<(), Status> + Send + Sync + 'static,
{
    Validate { check, name: "validate", inbound: true, outbound: false, message: PhantomData }
}

/// What [`validate`] makes.
pub struct Validate<M, F> {
    check: F,
    name: &'static str,
    inbound: bool,
    outbound: bool,
    message: PhantomData<fn(&M)>,
}

impl<M, F> Validate<M, F> {
    /// Names the check: the interceptor that ended a call it rejects.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Checks the handler's responses of type `M` instead of the client's
    /// messages: a response that fails ends the call with the status, and
    /// is not sent.
    pub fn outbound(mut self) -> Self {
        (self.inbound, self.outbound) = (false, true);
        self
    }

    /// Checks the messages of type `M` both ways.
    pub fn both_ways(mut self) -> Self {
        (self.inbound, self.outbound) = (true, true);
        self
    }
}

impl<M, F: Clone> Clone for Validate<M, F> {
    fn clone(&self) -> Self {
        Validate { check: self.check.clone(), message: PhantomData, ..*self }
    }
}

impl<M, F> fmt::Debug for Validate<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validate")
            .field("name", &self.name)
            .field("message", &std::any::type_name::<M>())
            .field("inbound", &self.inbound)
            .field("outbound", &self.outbound)
            .finish_non_exhaustive()
    }
}

impl<M, F> Interceptor for Validate<M, F>
where
    M: prost::Message + 'static,
    F: Fn(&M) -> Result<(), Status> + Send + Sync + 'static,
{
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn on_message<X: prost::Message + 'static>(
        &self,
        _: &(),
        _: &mut (),
        msg: &MessageRef<'_, X>,
    ) -> Result<(), Status> {
        // `X` is known where this is compiled: for any other type than `M`
        // the comparison of the two types is a constant, and this is `Ok`.
        let Some(message) = msg.downcast::<M>() else { return Ok(()) };
        let checked = match msg.direction() {
            Direction::Inbound => self.inbound,
            Direction::Outbound => self.outbound,
        };
        if checked {
            (self.check)(message)
        } else {
            Ok(())
        }
    }
}
