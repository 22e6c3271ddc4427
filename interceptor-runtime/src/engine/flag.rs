//! Bits of [`CallContext::flags`](super::CallContext): what a direction must
//! look at before its next message. One load per message tells whether any is
//! set.

/// An interceptor ended the call; the status is in `Cold::terminal`.
pub(crate) const TERMINATED: u8 = 1;
/// The call has its outcome.
pub(crate) const OVER: u8 = 2;
/// The inbound direction must poll the interceptors' timers
/// (`poll_interrupt`): it has not yet, or one of them fired.
pub(crate) const INTERRUPT_IN: u8 = 4;
/// The same for the outbound direction.
pub(crate) const INTERRUPT_OUT: u8 = 8;
/// The inbound stream has yielded its last item.
pub(crate) const DONE_IN: u8 = 16;
/// The outbound stream has yielded its last item.
pub(crate) const DONE_OUT: u8 = 32;
/// The outbound stream ends the call, also when dropped before its end.
pub(crate) const OWNS_END: u8 = 64;
/// `INTERRUPT_IN` or `INTERRUPT_OUT`.
pub(crate) const fn interrupt(direction: crate::interceptor::Direction) -> u8 {
    match direction {
        crate::interceptor::Direction::Inbound => INTERRUPT_IN,
        crate::interceptor::Direction::Outbound => INTERRUPT_OUT,
    }
}

/// `DONE_IN` or `DONE_OUT`.
pub(crate) const fn done(direction: crate::interceptor::Direction) -> u8 {
    match direction {
        crate::interceptor::Direction::Inbound => DONE_IN,
        crate::interceptor::Direction::Outbound => DONE_OUT,
    }
}
