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
