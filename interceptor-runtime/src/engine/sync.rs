//! The atomics and waker slots of a call's context, from one place: std's
//! and futures' by default, loom's under `cfg(loom)`, so that a loom model
//! of the context runs the same code. (The loom build needs `loom`, with
//! its `futures` feature, as a dependency under that cfg; the default build
//! does not. The rest of the engine's atomics, the process-wide call count
//! for one, stay std's.)

#[cfg(not(loom))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};
#[cfg(loom)]
pub(crate) use loom_waker::AtomicWaker;

#[cfg(loom)]
mod loom_waker {
    use std::task::Waker;

    /// loom's `AtomicWaker`, registering by reference as futures' does.
    #[derive(Debug, Default)]
    pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            AtomicWaker(loom::future::AtomicWaker::new())
        }

        pub(crate) fn register(&self, waker: &Waker) {
            self.0.register_by_ref(waker);
        }

        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }
}
