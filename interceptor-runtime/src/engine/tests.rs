//! Tests of the engine from the inside.

use tonic::Status;

use super::DirectionHandle;
use crate::{Inbound, Outbound};

/// I7: a direction handle may go to, and be shared with, another thread
/// whatever its message type (it holds none), and the wrappers stay `Send`
/// where tonic needs them to be: for messages that are.
#[test]
fn handles_and_wrappers_may_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<DirectionHandle<()>>();
    send_and_sync::<DirectionHandle<std::rc::Rc<()>>>();
    send::<Inbound<()>>();
    send::<Outbound<futures_util::stream::Iter<std::vec::IntoIter<Result<(), Status>>>>>();
}

#[cfg(feature = "budget")]
mod budget {
    use std::{sync::Arc, time::Duration};

    use tonic::{Request, Response};

    use crate::{
        builtin::budget::{Budget, BudgetConfig},
        engine::{MethodInfo, RpcKind, Slot},
    };

    /// The call's timer is registered with the call's waker, which holds the
    /// call weakly: a call that ends is freed at once, not when its timer
    /// would have fired.
    #[tokio::test]
    async fn a_call_with_a_timer_is_freed_when_it_ends() {
        static SLOT: Slot = Slot::new();
        let method = SLOT.get_or_init(
            || MethodInfo::new("test.Freed", "Get", RpcKind::Unary),
            || Budget::new(BudgetConfig { duration: Some(Duration::from_secs(3600)), ..Default::default() }),
        );
        let mut request = Request::new(());
        let mut call = method.start(&mut request).await.expect("no limit to reject it");
        let cell = Arc::downgrade(&call.cell);
        // The first message polls the timers: the `Sleep` now holds the call's waker.
        let request = call.recv_unary(request).await.expect("passes");
        call.finish_unary(Ok(Response::new(()))).await.expect("passes");
        assert!(cell.upgrade().is_some(), "the request's extensions still hold the call");
        drop(request);
        assert!(cell.upgrade().is_none(), "the call's cell outlived the call");
    }
}

/// The fast path's contract: after the hooks passed a message, interceptors
/// without message hooks let every next message pass unseen (the context's
/// count for the direction, `u16::MAX` at most), a `Chain` as many as its
/// most demanding link, a `budget` what its limits leave, and an
/// interceptor with hooks of its own none.
#[cfg(all(feature = "testing", feature = "budget", feature = "monitor", feature = "rate"))]
mod unseen {
    use std::{
        sync::atomic::{AtomicBool, Ordering::Relaxed},
        task::{Context, Poll},
    };

    use tonic::{metadata::MetadataMap, Code, Status};

    use crate::{
        builtin::{
            budget::BudgetCall,
            budget::{Budget, BudgetConfig},
            monitor::{Monitor, MonitorConfig},
            rate::{Rate, RateConfig},
        },
        engine::{CallGuard, MethodInfo, RpcKind, Slot},
        Chain, Direction, Inbound, Interceptor, MessageRef,
    };

    /// Looks at every message.
    #[derive(Default)]
    struct Hooked;

    impl Interceptor for Hooked {
        type Call = ();
        type Stream = ();
        fn on_message<M: prost::Message + 'static>(
            &self,
            _: &(),
            _: &mut (),
            _: &MessageRef<'_, M>,
        ) -> Result<(), Status> {
            Ok(())
        }
    }

    /// No message hooks; its timer "fires" once `TRIPPED` is set.
    #[derive(Default)]
    struct Tripwire;

    static TRIPPED: AtomicBool = AtomicBool::new(false);

    impl Interceptor for Tripwire {
        type Call = ();
        type Stream = ();
        const __MESSAGE_HOOKS: bool = false;
        fn poll_interrupt(&self, _: &(), _: &mut (), _: &crate::CallContext, _: &mut Context<'_>) -> Poll<Status> {
            if TRIPPED.load(Relaxed) {
                Poll::Ready(Status::deadline_exceeded("tripped"))
            } else {
                Poll::Pending
            }
        }
    }

    /// A client-streaming call of the method `name` with `interceptors`, its
    /// inbound stream holding the three messages "a", "b" and "c".
    async fn three_messages<I: Interceptor>(
        slot: &'static Slot,
        name: &'static str,
        interceptors: I,
    ) -> (CallGuard<I>, Inbound<String>) {
        let method =
            slot.get_or_init(|| MethodInfo::new("test.Unseen", name, RpcKind::ClientStreaming), || interceptors);
        let mut request = crate::testing::streaming_request(["a", "b", "c"].map(String::from));
        let mut call = method.start(&mut request).await.expect("nothing rejects");
        let inbound = call.inbound(request).into_inner();
        (call, inbound)
    }

    /// What is left of the inbound direction's unseen count after three
    /// messages: the first one seen, the two others unseen.
    async fn left_after_three<I: Interceptor>(slot: &'static Slot, name: &'static str, interceptors: I) -> u16 {
        let (call, mut inbound) = three_messages(slot, name, interceptors).await;
        for _ in 0..3 {
            inbound.message().await.expect("a message").expect("not the end");
        }
        call.context().unseen(Direction::Inbound).load(Relaxed)
    }

    #[tokio::test]
    async fn interceptors_tell_how_many_messages_pass_unseen() {
        static NONE: Slot = Slot::new();
        static CHAIN: Slot = Slot::new();
        static BUDGET: Slot = Slot::new();
        static CHAINED_BUDGET: Slot = Slot::new();
        static HOOKED: Slot = Slot::new();
        static HOOKED_LAST: Slot = Slot::new();
        let budget = || Budget::new(BudgetConfig { messages: Some(10), ..Default::default() });
        assert_eq!(left_after_three(&NONE, "None", ()).await, u16::MAX - 2);
        assert_eq!(left_after_three(&CHAIN, "Chain", Chain::new((), ())).await, u16::MAX - 2);
        // 10 messages, the first seen: 9 may pass unseen, and 2 did.
        assert_eq!(left_after_three(&BUDGET, "Budget", budget()).await, 7);
        assert_eq!(left_after_three(&CHAINED_BUDGET, "ChainedBudget", Chain::new((), budget())).await, 7);
        assert_eq!(left_after_three(&HOOKED, "Hooked", Hooked).await, 0);
        assert_eq!(left_after_three(&HOOKED_LAST, "HookedLast", Chain::new(budget(), Hooked)).await, 0);
    }

    #[tokio::test]
    async fn monitor_and_rate_tell_how_many_messages_pass_unseen() {
        static MONITOR: Slot = Slot::new();
        static WARNING: Slot = Slot::new();
        static RATE: Slot = Slot::new();
        // With the metrics feature, the messages before the batch of 256
        // (the 256th is seen): 254 after the first, 2 of them gone.
        let monitor = left_after_three(&MONITOR, "Monitor", Monitor::new(MonitorConfig::default())).await;
        assert_eq!(monitor, if cfg!(feature = "metrics") { 252 } else { u16::MAX - 2 });
        // A message over 100 bytes may come: monitor sees every one.
        let config = MonitorConfig { warn_size: Some(100) };
        assert_eq!(left_after_three(&WARNING, "Warning", Monitor::new(config)).await, 0);
        // A burst of 10: the first message spends one permit, the 9 left may
        // pass unseen, and 2 did.
        let config = RateConfig { recv: Some(3), burst: Some(10), ..Default::default() };
        assert_eq!(left_after_three(&RATE, "Rate", Rate::new(config)).await, 7);
    }

    /// A call that ends, or a timer that fires, is heard before the next
    /// message, also while messages pass unseen.
    #[tokio::test]
    async fn no_message_passes_unseen_once_the_call_ended_or_a_timer_fired() {
        static ENDED: Slot = Slot::new();
        static TIMED: Slot = Slot::new();
        for (slot, name) in [(&ENDED, "Ended"), (&TIMED, "Timed")] {
            let (call, mut inbound) = three_messages(slot, name, Tripwire).await;
            inbound.message().await.expect("a message").expect("not the end");
            assert_eq!(call.context().unseen(Direction::Inbound).load(Relaxed), u16::MAX);
            let code = if name == "Ended" {
                call.context().terminate(&Status::aborted("ended"));
                Code::Aborted
            } else {
                TRIPPED.store(true, Relaxed);
                call.context().interrupt();
                Code::DeadlineExceeded
            };
            assert_eq!(inbound.message().await.expect_err("the call is over").code(), code);
        }
    }

    /// What the built-in interceptors allow, and how they take and give back.
    #[test]
    fn builtins_allow_what_their_state_leaves_and_take_it_back() {
        let ctx = crate::engine::test_context(RpcKind::Bidi);
        let metadata = MetadataMap::new();

        let config = BudgetConfig { messages: Some(10), bytes: Some(1 << 20), ..Default::default() };
        let (budget, call) = (Budget::new(config), BudgetCall::default());
        assert_eq!(budget.__unseen_allowance(&call, &(), 3, 0), 7);
        assert_eq!(budget.__unseen_allowance(&call, &(), 3, (1 << 20) - 100_000), 1);
        assert_eq!(budget.__unseen_allowance(&call, &(), 3, (1 << 20) - 100), 0);

        let rate = Rate::new(RateConfig { recv: Some(3), burst: Some(10), ..Default::default() });
        let call = rate.on_start(&ctx, &metadata).expect("no key to miss");
        let mut stream = rate.on_stream(&call, &ctx, Direction::Inbound);
        assert_eq!(rate.__unseen_allowance(&call, &stream, 0, 0), 10);
        rate.__spend_unseen(&mut stream, 4);
        assert_eq!(rate.__unseen_allowance(&call, &stream, 4, 0), 6);
        rate.__spend_unseen(&mut stream, -2);
        assert_eq!(rate.__unseen_allowance(&call, &stream, 2, 0), 8);

        let monitor = Monitor::new(MonitorConfig::default());
        let call = monitor.on_start(&ctx, &metadata).expect("monitor never rejects");
        let mut stream = monitor.on_stream(&call, &ctx, Direction::Inbound);
        let before = monitor.__unseen_allowance(&call, &stream, 0, 0);
        monitor.__spend_unseen(&mut stream, 100);
        monitor.__spend_unseen(&mut stream, -40);
        let after = monitor.__unseen_allowance(&call, &stream, 60, 0);
        if cfg!(feature = "metrics") {
            assert_eq!((before, after), (255, 195));
        } else {
            assert_eq!((before, after), (u64::MAX, u64::MAX));
        }
    }
}
