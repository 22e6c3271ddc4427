//! 10,000 concurrent bidi streams held open over loopback, raw and
//! intercepted (monitor, rate and budget together): memory per stream and
//! tasks alive.
//!
//! Each side runs in a process of its own (this binary runs itself with
//! `SCALE_CHILD=raw|intercepted`), so that neither inherits the other's heap,
//! and the pair is run `ROUNDS` times. A child serves the bench service on
//! 127.0.0.1, opens 100 client connections, opens and closes a first batch of
//! streams (warming allocator and lazy state), then measures, opens 10,000
//! bidi streams (each one echo to be sure the handler runs), and measures
//! again: resident memory (`/proc/self/statm`), live heap bytes (a counting
//! global allocator) and tokio's `num_alive_tasks()`. Client and server are
//! both in the process, so the per-stream numbers include both ends; the
//! difference between the sides is what the interceptors cost.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    process::Command,
    sync::atomic::{AtomicI64, Ordering::Relaxed},
    time::Duration,
};

use interceptor_benches::{
    connect, median, payload, pb::bench_client::BenchClient, rss_bytes, serve, Intercepted, Monitored, Raw,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

/// Live heap bytes, kept by [`Counting`].
static HEAP: AtomicI64 = AtomicI64::new(0);

/// Live allocations by size in bytes (the last slot: that size or more).
static BY_SIZE: [AtomicI64; 4097] = [const { AtomicI64::new(0) }; 4097];

/// The system allocator, counting the bytes it has out and its allocations
/// by size.
struct Counting;

fn count(size: usize, n: i64) {
    HEAP.fetch_add(size as i64 * n, Relaxed);
    BY_SIZE[size.min(BY_SIZE.len() - 1)].fetch_add(n, Relaxed);
}

// SAFETY: every method forwards to the system allocator with its caller's
// arguments, so it keeps `GlobalAlloc`'s contract as `System` does; counting
// neither allocates nor panics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: the caller's promise (a layout of non-zero size), passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: the caller's promise (`ptr` came from this allocator, that
        // is from `System`, with `layout`), passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: as in `dealloc`, and `new_size` is the caller's valid size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: usize = 100;
const ROUNDS: usize = 3;

fn streams() -> usize {
    std::env::var("SCALE_STREAMS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

/// One open stream: the client's sender and the echoes.
type Held = (tokio::sync::mpsc::Sender<interceptor_benches::pb::Payload>, Streaming<interceptor_benches::pb::Payload>);

async fn open_one(client: &mut BenchClient<Channel>) -> Held {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(payload(16)).await.expect("first message");
    let mut echoes = client.bidi(ReceiverStream::new(rx)).await.expect("bidi").into_inner();
    echoes.message().await.expect("echo").expect("an echo");
    (tx, echoes)
}

/// Opens `n` streams spread over the clients' connections, concurrently per
/// connection.
async fn open(clients: &[BenchClient<Channel>], n: usize) -> Vec<Held> {
    let per = n.div_ceil(clients.len());
    let batches = clients.iter().enumerate().map(|(i, client)| {
        let mut client = client.clone();
        let count = per.min(n.saturating_sub(i * per));
        async move {
            let mut held = Vec::with_capacity(count);
            for _ in 0..count {
                held.push(open_one(&mut client).await);
            }
            held
        }
    });
    futures_util::future::join_all(batches).await.into_iter().flatten().collect()
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    rss: u64,
    heap: i64,
    tasks: usize,
    live_calls: usize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        rss: rss_bytes().unwrap_or(0),
        heap: HEAP.load(Relaxed),
        tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        live_calls: interceptor_runtime::stats::live_calls(),
    }
}

fn child(mode: &str) {
    let n = streams();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let addr = match mode {
            "raw" => serve(Raw).await,
            "monitor" => serve(Monitored).await,
            "intercepted" => serve(Intercepted).await,
            other => panic!("SCALE_CHILD={other}: raw, monitor or intercepted"),
        };
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(connect(addr).await);
        }
        // Warm up: lazy statics, allocator arenas, connection buffers.
        drop(open(&clients, n / 5).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sizes_before: Vec<i64> = BY_SIZE.iter().map(|n| n.load(Relaxed)).collect();
        let before = snapshot();
        let held = open(&clients, n).await;
        assert_eq!(held.len(), n);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = snapshot();
        // Allocations per stream by size, where at least one in two streams has one.
        let sizes: Vec<String> = BY_SIZE
            .iter()
            .zip(&sizes_before)
            .enumerate()
            .filter_map(|(size, (now, before))| {
                let per_stream = (now.load(Relaxed) - before) as f64 / n as f64;
                (per_stream.abs() >= 0.5).then(|| format!("{size}:{per_stream:.2}"))
            })
            .collect();
        println!("SIZES {}", sizes.join(" "));
        println!(
            "RESULT mode={mode} streams={n} rss_before={} rss_after={} heap_before={} heap_after={} \
             tasks_before={} tasks_after={} live_calls_before={} live_calls_after={}",
            before.rss,
            after.rss,
            before.heap,
            after.heap,
            before.tasks,
            after.tasks,
            before.live_calls,
            after.live_calls
        );
        drop(held);
    });
}

#[derive(Debug, Default, Clone)]
struct Run {
    rss_per_stream: f64,
    heap_per_stream: f64,
    tasks_before: usize,
    tasks_after: usize,
    live_calls: usize,
    /// Allocations per stream by size.
    sizes: Vec<(usize, f64)>,
}

fn run_child(mode: &str) -> Run {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe).env("SCALE_CHILD", mode).output().expect("run the scale child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scale child {mode} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).expect("a RESULT line");
    let field = |name: &str| -> i64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let n = field("streams") as f64;
    Run {
        rss_per_stream: (field("rss_after") - field("rss_before")) as f64 / n,
        heap_per_stream: (field("heap_after") - field("heap_before")) as f64 / n,
        tasks_before: field("tasks_before") as usize,
        tasks_after: field("tasks_after") as usize,
        live_calls: (field("live_calls_after") - field("live_calls_before")) as usize,
        sizes: stdout
            .lines()
            .find_map(|l| l.strip_prefix("SIZES"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once(':'))
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
            .collect(),
    }
}

fn main() {
    if let Ok(mode) = std::env::var("SCALE_CHILD") {
        child(&mode);
        return;
    }
    // `cargo bench -- <filter>`: run only when the filter names this bench.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "scale".contains(f.as_str()) || f.contains("scale")) {
        return;
    }
    let n = streams();
    let modes = ["raw", "monitor", "intercepted"];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
    for round in 0..ROUNDS {
        // Alternate the order, so that no side always runs first.
        let mut order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let run = run_child(modes[i]);
            println!(
                "round {round}: {} rss/stream {:.0} heap/stream {:.0}",
                modes[i], run.rss_per_stream, run.heap_per_stream
            );
            runs[i].push(run);
        }
    }
    let med = |i: usize, f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    let rss: Vec<f64> = (0..modes.len()).map(|i| med(i, |r| r.rss_per_stream)).collect();
    let heap: Vec<f64> = (0..modes.len()).map(|i| med(i, |r| r.heap_per_stream)).collect();
    let first = |i: usize| &runs[i][0];
    println!(
        "\n{n} concurrent bidi streams held open over loopback ({CONNECTIONS} connections; client and server in \
         one process), medians of {ROUNDS} rounds, each side in a fresh process:\n"
    );
    println!("| per stream | raw | monitor | monitor + rate + budget | all three - raw | target |");
    println!("|---|---:|---:|---:|---:|---|");
    let verdict = |added: f64| if added <= 512.0 { "<= 512 B: met" } else { "<= 512 B: NOT met" };
    println!(
        "| RSS bytes | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        rss[0],
        rss[1],
        rss[2],
        rss[2] - rss[0],
        verdict(rss[2] - rss[0])
    );
    println!(
        "| heap bytes (allocated) | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        heap[0],
        heap[1],
        heap[2],
        heap[2] - heap[0],
        verdict(heap[2] - heap[0])
    );
    let tasks = |r: &Run| format!("{} -> {}", r.tasks_before, r.tasks_after);
    let added_tasks = |r: &Run| r.tasks_after as i64 - r.tasks_before as i64;
    println!(
        "| tokio tasks alive, before -> with the streams | {} | {} | {} | {} | no task per stream |",
        tasks(first(0)),
        tasks(first(1)),
        tasks(first(2)),
        added_tasks(first(2)) - added_tasks(first(0)),
    );
    println!(
        "| intercepted calls alive (`stats::live_calls`) | {} | {} | {} | | |",
        first(0).live_calls,
        first(1).live_calls,
        first(2).live_calls
    );

    // Where the bytes go: allocations per stream by size, intercepted minus raw.
    let per_size = |run: &Run| -> std::collections::BTreeMap<usize, f64> { run.sizes.iter().copied().collect() };
    let (raw, monitor, all) = (per_size(first(0)), per_size(first(1)), per_size(first(2)));
    let mut sizes: Vec<usize> = raw.keys().chain(monitor.keys()).chain(all.keys()).copied().collect();
    sizes.sort_unstable();
    sizes.dedup();
    println!("\nAllocations alive per stream by size, above raw (round 0):\n");
    println!("| size (B) | monitor - raw | all three - raw |");
    println!("|---:|---:|---:|");
    for size in sizes {
        let get = |m: &std::collections::BTreeMap<usize, f64>| m.get(&size).copied().unwrap_or(0.0);
        let (m, a) = (get(&monitor) - get(&raw), get(&all) - get(&raw));
        if m.abs() >= 0.5 || a.abs() >= 0.5 {
            println!("| {size} | {m:+.0} | {a:+.0} |");
        }
    }
}
