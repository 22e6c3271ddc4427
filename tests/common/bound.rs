//! Bounds for tests that wait: a test whose timer never fires, whose wake-up
//! is lost or whose thread never yields again fails, saying so, instead of
//! hanging the suite. The bounds are generous; no test asserts how fast
//! anything runs.

use std::{
    future::Future,
    io::Write,
    sync::mpsc::{self, RecvTimeoutError},
    time::Duration,
};

/// How much paused time a test on tokio's paused clock may wait. The tests
/// wait for a few seconds of paused time at most.
pub const PAUSED_LIMIT: Duration = Duration::from_secs(120);

/// How long a test may run in real time. The CI machine has 2 cores shared by
/// the whole suite, so this is many times what any test takes there.
pub const REAL_TIME_LIMIT: Duration = Duration::from_secs(60);

/// How long the watchdog of [`in_real_time`] waits for a test it failed to
/// end, before it ends the test binary.
const GRACE: Duration = Duration::from_secs(5);

/// Runs a test that waits on tokio's paused clock, in process (no sockets),
/// within [`PAUSED_LIMIT`] of paused time. A test that waits for a timer that
/// never fires leaves the runtime with nothing to do but wait for this bound's
/// timer, so the clock jumps to it and the test fails at once. (And within
/// [`REAL_TIME_LIMIT`], for a test whose thread never yields; see
/// [`in_real_time`].)
///
/// Not for tests on a paused clock that also do I/O: there the clock jumps to
/// the next timer whenever the runtime waits for a socket, and would reach this
/// bound's too early. Use [`in_real_time`] for those.
pub async fn on_paused_clock<T>(test: impl Future<Output = T>) -> T {
    in_real_time(async {
        match tokio::time::timeout(PAUSED_LIMIT, test).await {
            Ok(done) => done,
            Err(_) => panic!(
                "the test still waits after {PAUSED_LIMIT:?} of paused time: a timer it waits for never fired, \
                 or a wake-up was lost"
            ),
        }
    })
    .await
}

/// Runs a test within [`REAL_TIME_LIMIT`] of real time, counted by a watchdog
/// thread, so that this works on tokio's paused clock too (where a tokio
/// timeout would fire whenever the runtime waits for a socket).
///
/// When the time is up, the test fails with a panic, unless its thread is
/// stuck in a loop that never yields (a timer's poll that spins, say): then
/// nothing can run on that thread, and after a grace period the watchdog ends
/// the whole test binary, naming the test, rather than let it hang.
pub async fn in_real_time<T>(test: impl Future<Output = T>) -> T {
    let test_name = std::thread::current().name().unwrap_or("a test").to_owned();
    let (expired_tx, expired) = tokio::sync::oneshot::channel::<()>();
    // Dropped when the test ends, however it ends: the watchdog then stops.
    let (_test_running, test_ended) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = test_ended.recv_timeout(REAL_TIME_LIMIT) {
            let _ = expired_tx.send(());
            if let Err(RecvTimeoutError::Timeout) = test_ended.recv_timeout(GRACE) {
                // Past the test harness's capture of the test's output, which
                // would be lost with the process.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n{test_name} still runs after {:?} and does not yield to its bound: its thread is stuck in \
                     a loop. Ending the test binary.",
                    REAL_TIME_LIMIT + GRACE
                );
                std::process::exit(101);
            }
        }
    });
    tokio::select! {
        biased;
        done = test => done,
        _ = expired => panic!("the test still runs after {REAL_TIME_LIMIT:?}: it hangs"),
    }
}

/// Waits until `done` holds, looking every 10 ms; fails after half of
/// [`REAL_TIME_LIMIT`] (real time), saying what it waited for. For what no
/// event announces, like a method's totals after a call ended over loopback.
/// Not on a paused clock: its sleeps would move the clock.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let (start, limit) = (std::time::Instant::now(), REAL_TIME_LIMIT / 2);
    while !done() {
        assert!(start.elapsed() < limit, "still waiting after {limit:?} for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
