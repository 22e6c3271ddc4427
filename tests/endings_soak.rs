//! A soak: 4 × 5,000 calls, one kind each, on a server with `InterceptLayer`,
//! whose clients cancel about half of them at random points (before the
//! call reaches the handler, while it waits, mid-upload, mid-download), each
//! checked against what its client knows it did: no call a client cancelled
//! is recorded OK, every call it completed is; then every call started has
//! finished, no call state is left alive, every `streams` slot is free again
//! and the process's resident memory is back near where it started.
//!
//! Bounded: 8 calls in flight per kind, over loopback; `ENDINGS_SOAK_CALLS`
//! sets the calls per kind (5,000).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use interceptor_runtime::stats;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code};

#[macro_use]
mod endings_kit;

use endings_kit::{connect, eventually, ledger, next_id, note, point, rect, request, serve, RawCall, RawConnection};
use interceptor_examples::pb::route_guide_client::RouteGuideClient;

ends_service!(
    Soaked,
    impl: [#[interceptor_runtime::intercept(
        monitor,
        budget(streams = 32),
        with = crate::endings_kit::probe(),
        service = "endings.Soak",
    )]],
    method: []
);

const STREAMS: usize = 32;

/// The request streams of the client streams cancelled, kept open.
static OPEN_UPLOADS: Mutex<Vec<mpsc::Sender<interceptor_examples::pb::Point>>> = Mutex::new(Vec::new());
const IN_FLIGHT: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unary,
    Server,
    Client,
    Bidi,
}

impl Kind {
    fn method(self) -> &'static str {
        match self {
            Kind::Unary => "GetFeature",
            Kind::Server => "ListFeatures",
            Kind::Client => "RecordRoute",
            Kind::Bidi => "RouteChat",
        }
    }
}

/// xorshift64*: enough randomness for where to cancel, and reproducible
/// from its seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What a client did with one call.
#[derive(Debug)]
struct Did {
    id: u64,
    kind: Kind,
    cancelled: bool,
    /// The status a client that did not cancel got.
    code: Code,
}

/// Waits a little for the handler of call `id` to have read `messages`;
/// where a client cancels need not be exact.
async fn maybe_wait(id: u64, messages: u64) {
    for _ in 0..200 {
        if ledger().progress_of(id) >= messages {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One call of `kind`: completed, or cancelled at a point `random` picks.
async fn one_call(
    kind: Kind,
    mut client: RouteGuideClient<Channel>,
    addr: std::net::SocketAddr,
    cancel: bool,
    at: u64,
    messages: i32,
) -> Did {
    let id = next_id();
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
    if !cancel {
        let result = match kind {
            Kind::Unary => client.get_feature(request(point(1), id, "", "")).await.map(drop),
            Kind::Server => {
                async {
                    let mut features = client.list_features(request(rect(messages), id, "", "")).await?.into_inner();
                    while features.message().await?.is_some() {}
                    Ok(())
                }
                .await
            }
            Kind::Client => {
                let points = tokio_stream::iter((0..messages).map(point));
                client.record_route(request(points, id, "", "")).await.map(drop)
            }
            Kind::Bidi => {
                async {
                    let notes = tokio_stream::iter((0..messages).map(note));
                    let mut replies = client.route_chat(request(notes, id, "", "")).await?.into_inner();
                    while replies.message().await?.is_some() {}
                    Ok(())
                }
                .await
            }
        };
        return Did { id, kind, cancelled: false, code: code(result) };
    }
    match kind {
        // The handler waits until the client goes away: at once, after a
        // few polls, or once the handler has the request.
        Kind::Unary => {
            let call = tokio::spawn(async move { client.get_feature(request(point(1), id, "hang", "")).await });
            match at {
                0 => {}
                1 => {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                }
                _ => maybe_wait(id, 1).await,
            }
            call.abort();
            let _ = call.await;
        }
        // An endless stream, dropped after `at` features.
        Kind::Server => {
            if let Ok(response) = client.list_features(request(rect(0), id, "endless", "")).await {
                let mut features = response.into_inner();
                for _ in 0..at {
                    if !matches!(features.message().await, Ok(Some(_))) {
                        break;
                    }
                }
            }
        }
        // Mid-upload: `messages` points sent, the stream left open, the call
        // aborted (tonic resets the stream).
        Kind::Client => {
            let (tx, rx) = mpsc::channel(8);
            let call =
                tokio::spawn(async move { client.record_route(request(ReceiverStream::new(rx), id, "", "")).await });
            for i in 0..messages {
                let _ = tx.send(point(i)).await;
            }
            if at > 0 {
                maybe_wait(id, messages as u64).await;
            }
            call.abort();
            let _ = call.await;
            // The upload stays open, as it does when a client gives up on a
            // call: ended now, it could reach the server as a clean end
            // before the reset does (tonic resets from a task of its own).
            OPEN_UPLOADS.lock().unwrap().push(tx);
        }
        // Mid-upload, both halves open: a raw HTTP/2 client resets.
        Kind::Bidi => {
            // A connection of its own: h2 sends a connection on which many
            // streams were reset with small DATA frames unread a GOAWAY
            // (ENHANCE_YOUR_CALM), as a guard against floods.
            let mut call = RawCall::open(addr, "/routeguide.RouteGuide/RouteChat", id, "").await;
            for i in 0..messages {
                call.send(&note(i), false);
            }
            if at > 0 {
                maybe_wait(id, messages as u64).await;
            }
            call.reset(h2::Reason::CANCEL);
        }
    }
    Did { id, kind, cancelled: true, code: Code::Cancelled }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux's /proc");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of kB")
}

/// Runs `calls` calls of `kind`, `IN_FLIGHT` at a time. Each call's task is
/// reaped once it is done: a finished task that is never joined keeps its
/// memory, which the check on resident memory would count.
async fn drive(kind: Kind, addr: std::net::SocketAddr, calls: usize, seed: u64, done: Arc<Mutex<Vec<Did>>>) {
    let client = connect(addr).await;
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut random = Random(seed);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let permit = slots.clone().acquire_owned().await.unwrap();
        while let Some(finished) = tasks.try_join_next() {
            finished.expect("a call's task");
        }
        let (cancel, at, messages) = (random.below(2) == 0, random.below(3), random.below(4) as i32);
        let (client, done) = (client.clone(), done.clone());
        tasks.spawn(async move {
            let did = one_call(kind, client, addr, cancel, at, messages).await;
            done.lock().unwrap().push(did);
            drop(permit);
        });
    }
    while let Some(finished) = tasks.join_next().await {
        finished.expect("a call's task");
    }
}

/// `STREAMS` calls of each method held open at once all reach their
/// handler: no `streams` slot was lost.
async fn every_slot_is_free(addr: std::net::SocketAddr) {
    let raw = RawConnection::open(addr).await;
    for kind in [Kind::Unary, Kind::Server, Kind::Client, Kind::Bidi] {
        let mut held = Vec::new();
        for _ in 0..STREAMS {
            let id = next_id();
            let what = match kind {
                Kind::Unary => "hang",
                Kind::Server => "endless",
                _ => "",
            };
            let mut call = raw.call(&format!("/routeguide.RouteGuide/{}", kind.method()), id, what).await;
            match kind {
                Kind::Unary => call.send(&point(1), true),
                Kind::Server => call.send(&rect(0), true),
                Kind::Client => call.send(&point(0), false),
                Kind::Bidi => call.send(&note(0), false),
            }
            held.push((id, call));
        }
        for (id, _) in &held {
            ledger().wait_progress(*id, 1).await;
        }
        for (_, call) in &mut held {
            call.reset(h2::Reason::CANCEL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_cancelled_calls_leave_nothing_behind() {
    let calls: usize = std::env::var("ENDINGS_SOAK_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let addr = serve(Soaked, true).await;
    let kinds = [Kind::Unary, Kind::Server, Kind::Client, Kind::Bidi];

    // A warm-up, so that the baseline holds what a server keeps anyway.
    let warm = Arc::new(Mutex::new(Vec::new()));
    for (i, kind) in kinds.into_iter().enumerate() {
        drive(kind, addr, 200, 7 + i as u64, warm.clone()).await;
    }
    let all_ended = || {
        kinds
            .iter()
            .all(|k| stats::method(&format!("/endings.Soak/{}", k.method())).is_some_and(|m| m.started == m.finished))
    };
    eventually("the warm-up ended", || (all_ended() && stats::live_calls() == 0).then_some(())).await;
    let baseline = rss_kib();

    let done = Arc::new(Mutex::new(Vec::new()));
    let drivers: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| tokio::spawn(drive(kind, addr, calls, 0x5eed + i as u64, done.clone())))
        .collect();
    for driver in drivers {
        driver.await.expect("a driver");
    }

    // Every call started has finished, and nothing of any call is alive.
    eventually("every call ended", || (all_ended() && stats::live_calls() == 0).then_some(())).await;
    let done = std::mem::take(&mut *done.lock().unwrap());
    assert_eq!(done.len(), 4 * calls);
    let mut cancelled = 0;
    for did in &done {
        let outcome = ledger().outcome_of(did.id);
        if did.cancelled {
            cancelled += 1;
            // The call may never have reached the server; if it did, it is
            // not OK, and a handler reading an upload saw no clean end.
            if let Some(outcome) = &outcome {
                assert_ne!(outcome.code, Code::Ok, "a call its client cancelled was recorded OK: {did:?} {outcome:?}");
            }
            if let Some(saw) = ledger().saw_of(did.id).filter(|_| matches!(did.kind, Kind::Client | Kind::Bidi)) {
                assert_ne!(saw.end, Ok(()), "a cancelled upload looked complete: {did:?} {saw:?}");
            }
        } else {
            assert_eq!(did.code, Code::Ok, "{did:?}");
            let outcome = outcome.unwrap_or_else(|| panic!("a completed call has no outcome: {did:?}"));
            assert_eq!(outcome.code, Code::Ok, "{did:?} {outcome:?}");
        }
        assert!(ledger().ends_of(did.id) <= 1, "{did:?} ended more than once");
    }
    assert!(cancelled > calls, "the clients cancelled {cancelled} calls of {}", 4 * calls);

    OPEN_UPLOADS.lock().unwrap().clear();
    every_slot_is_free(addr).await;
    eventually("the held calls ended", || (all_ended() && stats::live_calls() == 0).then_some(())).await;

    let after = rss_kib();
    // The ledger keeps what each call left (a few hundred bytes: its
    // outcome, what its handler saw); beyond that, 12 MiB for what the
    // allocator and the runtime keep. Call state left behind would be
    // kilobytes per call (the call's cell, its HTTP/2 stream, its task).
    let allowance = 12 * 1024 + (4 * calls as u64 * 512) / 1024;
    assert!(after <= baseline + allowance, "resident memory grew from {baseline} KiB to {after} KiB");
    eprintln!("{} calls, {cancelled} cancelled; resident memory {baseline} KiB -> {after} KiB", 4 * calls);
}
