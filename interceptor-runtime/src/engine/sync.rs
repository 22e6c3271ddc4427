//! The atomics, waker slots and once-cells of a call's context, from one
//! place: std's and futures' by default, loom's under `cfg(interceptor_loom)`,
//! so that the loom model of the context (`engine/loom_tests.rs`) runs the
//! same code. (The loom build has `loom`, with its `futures` feature, as a
//! dependency under that cfg; the default build does not. The rest of the
//! engine's atomics, the process-wide call count for one, stay std's.)
//!
//! The cfg is this crate's own, not the usual `loom`: tokio leaves out its
//! `net` module under `cfg(loom)`, which tonic's server needs, so
//! `RUSTFLAGS="--cfg loom"` cannot build this crate's dependencies.

#[cfg(not(interceptor_loom))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(interceptor_loom))]
pub(crate) use once_cell::race::OnceBox;
#[cfg(not(interceptor_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU16, AtomicU64, AtomicU8, Ordering};
#[cfg(not(interceptor_loom))]
pub(crate) use std::sync::OnceLock;

#[cfg(interceptor_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU16, AtomicU64, AtomicU8, Ordering};
#[cfg(interceptor_loom)]
pub(crate) use loom_once::{OnceBox, OnceLock};
#[cfg(interceptor_loom)]
pub(crate) use loom_waker::AtomicWaker;

#[cfg(interceptor_loom)]
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

/// Once-cells whose publication loom sees. loom has none, and std's and
/// once_cell's synchronize outside loom's view: loom would see every value
/// the moment it is set, whatever the orderings around it, and would find a
/// value made of loom's atomics (the context's `Cold`) read by a thread that
/// did not see it made. Each keeps its value in the real cell, beside
/// `published`, a loom atomic that stands for that cell's own state: stored
/// with `Release` once the value is set, loaded with `Acquire` by `get`, so
/// that loom explores a reader that does not see the value yet. A caller
/// that finds the value set by another thread waits until that thread has
/// published it, as the real cells' readers and losers synchronize with
/// their winner.
#[cfg(interceptor_loom)]
mod loom_once {
    use loom::sync::atomic::{AtomicBool, Ordering::*};

    /// once_cell's `race::OnceBox`, published to loom.
    pub(crate) struct OnceBox<T> {
        value: once_cell::race::OnceBox<T>,
        published: AtomicBool,
    }

    impl<T> OnceBox<T> {
        pub(crate) fn new() -> Self {
            OnceBox { value: once_cell::race::OnceBox::new(), published: AtomicBool::new(false) }
        }

        pub(crate) fn get(&self) -> Option<&T> {
            if self.published.load(Acquire) {
                self.value.get()
            } else {
                None
            }
        }

        /// As once_cell's, racing makers may each make a value: the first set
        /// wins, and the others' are dropped.
        pub(crate) fn get_or_init(&self, make: impl FnOnce() -> Box<T>) -> &T {
            if let Some(value) = self.get() {
                return value;
            }
            match self.value.set(make()) {
                Ok(()) => self.published.store(true, Release),
                Err(_lost) => wait_published(&self.published),
            }
            self.value.get().expect("set above, or by the thread waited for")
        }
    }

    /// std's `OnceLock`, published to loom. The closures given to
    /// `get_or_init` must not touch loom's objects (std's cell blocks others
    /// while it runs; the context's make a `CancellationToken`).
    pub(crate) struct OnceLock<T> {
        value: std::sync::OnceLock<T>,
        published: AtomicBool,
    }

    impl<T> Default for OnceLock<T> {
        fn default() -> Self {
            OnceLock { value: std::sync::OnceLock::new(), published: AtomicBool::new(false) }
        }
    }

    impl<T> OnceLock<T> {
        pub(crate) fn get(&self) -> Option<&T> {
            if self.published.load(Acquire) {
                self.value.get()
            } else {
                None
            }
        }

        pub(crate) fn set(&self, value: T) -> Result<(), T> {
            match self.value.set(value) {
                Ok(()) => {
                    self.published.store(true, Release);
                    Ok(())
                }
                Err(value) => {
                    wait_published(&self.published);
                    Err(value)
                }
            }
        }

        pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
            if let Some(value) = self.get() {
                return value;
            }
            let mut made_here = false;
            let value = self.value.get_or_init(|| {
                made_here = true;
                init()
            });
            if made_here {
                self.published.store(true, Release);
            } else {
                wait_published(&self.published);
            }
            value
        }
    }

    /// Another thread set the value: wait until it has published it.
    fn wait_published(published: &AtomicBool) {
        while !published.load(Acquire) {
            loom::thread::yield_now();
        }
    }
}
