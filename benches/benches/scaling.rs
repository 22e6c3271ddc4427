//! Many streams at once on a multi-thread server: raw tonic against each
//! interceptor configuration, in alternation, in one process.
//!
//! The server runs on a runtime of its own with `SCALING_WORKERS` worker
//! threads (2 by default), the clients on another (`SCALING_CLIENT_WORKERS`,
//! 2). Each configuration is served on its own port; each has 8 client
//! connections. One iteration runs 64 streams at once (8 per connection),
//! each moving the same number of messages, and is timed from the first
//! request to the last stream's end; the server's CPU time is the sum of its
//! worker threads' CPU clocks (`pthread_getcpuclockid`) over the iteration.
//! Raw and the configuration measured run one iteration each in turn (raw,
//! X, X, raw, ...); a sample is one such pair, and the table gives medians
//! over samples of X's throughput over raw's and of the server CPU time per
//! message each added.
//!
//! The configurations: the wrappers with no interceptor (what the call
//! engine costs by itself); `monitor` (the `metrics` feature on, no
//! recorder); `monitor` with a metrics-exporter-prometheus recorder installed
//! (upkeep every 5 s, as `PrometheusBuilder::install` runs it); monitor, rate
//! and budget (with `streams`) with a limiter per stream; the same with one
//! per method; and, for comparison, monitor plus what v0.1's monitor did per
//! message with the recorder (a counter and a histogram sample per message).
//! Client streaming, server streaming, bidi (pipelined: the client sends all
//! its messages without waiting for the echoes; the handler returns its
//! request stream, boxed, so one task polls both directions) and relay (the
//! same echo from a task of its own through a channel, as tonic's streaming
//! example writes it: two tasks, which may run on two cores), 16 B and
//! 1 KiB.
//!
//! `BENCH_QUICK=1`: fewer, shorter samples.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Mutex,
    time::{Duration, Instant},
};

use interceptor_benches::{
    bidi_pipelined, client_streaming, connect, median, pb::bench_client::BenchClient, quick, relay_pipelined, serve,
    server_streaming, LimitedPerMethod, LimitedPerStream, Monitored, MonitoredExported, PerMessageExported, Raw,
    Wrapped,
};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

const CONNECTIONS: usize = 8;
const STREAMS: usize = 64;

/// The CPU clocks of the server runtime's threads.
static SERVER_CLOCKS: Mutex<Vec<libc::clockid_t>> = Mutex::new(Vec::new());

/// Registers the calling thread's CPU clock (from `on_thread_start`).
fn register_cpu_clock() {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is always valid for the calling thread, and
    // `clock` is a valid place for the result.
    let status = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(status, 0, "pthread_getcpuclockid");
    SERVER_CLOCKS.lock().unwrap_or_else(|e| e.into_inner()).push(clock);
}

/// CPU time used so far by the server's threads, in nanoseconds.
fn server_cpu_ns() -> u64 {
    let clocks = SERVER_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    clocks
        .iter()
        .map(|&clock| {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `clock` came from `pthread_getcpuclockid` for a thread
            // of the server runtime, which lives as long as this process's
            // measurements; `ts` is a valid place for the result.
            let status = unsafe { libc::clock_gettime(clock, &mut ts) };
            assert_eq!(status, 0, "clock_gettime");
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        })
        .sum()
}

type Workload = fn(BenchClient<Channel>, u64, usize) -> Pin<Box<dyn Future<Output = u64> + Send>>;

struct Kind {
    name: &'static str,
    workload: Workload,
}

fn kinds() -> [Kind; 4] {
    [
        Kind {
            name: "client streaming",
            workload: |mut c, m, s| Box::pin(async move { client_streaming(&mut c, m, s).await }),
        },
        Kind {
            name: "server streaming",
            workload: |mut c, m, s| Box::pin(async move { server_streaming(&mut c, m, s).await }),
        },
        Kind { name: "bidi", workload: |mut c, m, s| Box::pin(async move { bidi_pipelined(&mut c, m, s).await }) },
        Kind {
            name: "relay (bidi, two tasks)",
            workload: |mut c, m, s| Box::pin(async move { relay_pipelined(&mut c, m, s).await }),
        },
    ]
}

/// The configurations, in the order their servers are started.
const CONFIGS: [&str; 6] = [
    "wrappers, no interceptor",
    "monitor",
    "monitor + prometheus recorder",
    "rate + budget, per stream",
    "rate + budget, per method",
    "v0.1's per-message export + recorder (replayed)",
];

/// The configurations the issue sets targets for.
const TARGETED: std::ops::RangeInclusive<usize> = 1..=4;

/// The kinds the issue sets targets for.
const TARGETED_KINDS: [&str; 2] = ["client streaming", "bidi"];

/// Where the recorder's configurations are in [`CONFIGS`]: their metric
/// handles must be made after the recorder is installed.
const RECORDED: [usize; 2] = [2, 5];

/// One server's client connections.
struct Target {
    clients: Vec<BenchClient<Channel>>,
}

impl Target {
    fn new(client_rt: &Runtime, addr: SocketAddr) -> Self {
        let clients = (0..CONNECTIONS).map(|_| client_rt.block_on(connect(addr))).collect();
        Target { clients }
    }
}

/// One iteration's wall time and server CPU time.
#[derive(Clone, Copy, Debug)]
struct Measured {
    wall: Duration,
    cpu_ns: u64,
}

fn iteration(client_rt: &Runtime, target: &Target, kind: &Kind, per_stream: u64, size: usize) -> Measured {
    let cpu_before = server_cpu_ns();
    let start = Instant::now();
    client_rt.block_on(async {
        let streams: Vec<_> = (0..STREAMS)
            .map(|i| tokio::spawn((kind.workload)(target.clients[i % CONNECTIONS].clone(), per_stream, size)))
            .collect();
        for stream in streams {
            assert_eq!(stream.await.expect("a stream"), per_stream);
        }
    });
    let wall = start.elapsed();
    Measured { wall, cpu_ns: server_cpu_ns() - cpu_before }
}

/// One sample: raw and the configuration, an iteration each.
#[derive(Clone, Copy, Debug)]
struct Pair {
    raw: Measured,
    config: Measured,
    messages: u64,
}

impl Pair {
    fn ratio(&self) -> f64 {
        self.raw.wall.as_secs_f64() / self.config.wall.as_secs_f64()
    }
    fn raw_rate(&self) -> f64 {
        self.messages as f64 / self.raw.wall.as_secs_f64()
    }
    fn raw_cpu(&self) -> f64 {
        self.raw.cpu_ns as f64 / self.messages as f64
    }
    fn config_cpu(&self) -> f64 {
        self.config.cpu_ns as f64 / self.messages as f64
    }
}

fn main() {
    // `cargo bench -- <filter>`: run only when the filter names this bench.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| f.contains("scaling")) {
        return;
    }
    let quick = quick();
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let workers = env("SCALING_WORKERS", 2);
    let client_workers = env("SCALING_CLIENT_WORKERS", 2);
    // Samples per cell: the 16 B rows carry the targets, and a single run of
    // 11 samples moves by a few percent (RESULTS.md, eighth round), so they
    // get 31; `SCALING_SAMPLES` sets every row's.
    let samples_of = |size: usize| {
        let default = match (quick, size) {
            (true, _) => 3,
            (false, 16) => 31,
            (false, _) => 11,
        };
        env("SCALING_SAMPLES", default)
    };

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("scaling-server")
        .on_thread_start(register_cpu_clock)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_workers)
        .thread_name("scaling-client")
        .enable_all()
        .build()
        .expect("client runtime");

    let addrs = server_rt.block_on(async {
        [
            serve(Raw).await,
            serve(Wrapped).await,
            serve(Monitored).await,
            serve(MonitoredExported).await,
            serve(LimitedPerStream).await,
            serve(LimitedPerMethod).await,
            serve(PerMessageExported).await,
        ]
    });
    let targets: Vec<Target> = addrs.iter().map(|&addr| Target::new(&client_rt, addr)).collect();
    let (raw, configs) = targets.split_first().expect("raw first");
    let kinds = kinds();

    // Every configuration but the recorder's makes its metric handles before
    // the recorder is installed: they stay no-ops.
    for (c, target) in configs.iter().enumerate() {
        if !RECORDED.contains(&c) {
            for kind in &kinds {
                iteration(&client_rt, target, kind, 10, 16);
            }
        }
    }
    let handle =
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("install the recorder");
    std::thread::Builder::new()
        .name("prometheus-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        })
        .expect("upkeep thread");
    for c in RECORDED {
        for kind in &kinds {
            iteration(&client_rt, &configs[c], kind, 10, 16);
        }
    }
    // `SCALING_CONFIGS=0,1` (indices into CONFIGS), `SCALING_KINDS=client,bidi`,
    // `SCALING_SIZES=16`: a part of the table.
    let pick = |name: &str| std::env::var(name).ok().map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>());
    let picked_configs: Vec<usize> = pick("SCALING_CONFIGS")
        .map(|v| v.iter().filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_else(|| (0..CONFIGS.len()).collect());
    let picked_kinds = pick("SCALING_KINDS");
    let sizes: Vec<usize> = pick("SCALING_SIZES")
        .map(|v| v.iter().filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 1024]);

    println!(
        "\n{STREAMS} streams over {CONNECTIONS} connections, {workers} server workers, {client_workers} client \
         workers, {} samples of each pair at 16 B and {} at 1 KiB (raw and the configuration in alternation); \
         medians:\n",
        samples_of(16),
        samples_of(1024),
    );
    let mut verdicts = Vec::new();
    let names: Vec<&str> = picked_configs.iter().map(|&c| CONFIGS[c]).collect();
    println!("| messages | raw msg/s | raw CPU ns/msg | {} |", names.join(" | "));
    println!("|---|---:|---:|{}", "---:|".repeat(names.len()));
    for size in sizes {
        // About 0.1 s per iteration of raw on the 2-core machine, more on larger ones.
        let per_stream: u64 = match (size, quick) {
            (16, false) => 6000,
            (16, true) => 2000,
            (_, false) => 1500,
            (_, true) => 500,
        };
        for kind in &kinds {
            if picked_kinds.as_ref().is_some_and(|k| !k.iter().any(|k| kind.name.starts_with(k.as_str()))) {
                continue;
            }
            let mut cells = Vec::new();
            let mut raw_rates = Vec::new();
            let mut raw_cpus = Vec::new();
            for &c in &picked_configs {
                let target = &configs[c];
                iteration(&client_rt, target, kind, per_stream, size);
                let mut pairs = Vec::new();
                for i in 0..samples_of(size) {
                    let (raw_side, config_side) = if i % 2 == 0 {
                        let r = iteration(&client_rt, raw, kind, per_stream, size);
                        (r, iteration(&client_rt, target, kind, per_stream, size))
                    } else {
                        let x = iteration(&client_rt, target, kind, per_stream, size);
                        (iteration(&client_rt, raw, kind, per_stream, size), x)
                    };
                    pairs.push(Pair { raw: raw_side, config: config_side, messages: per_stream * STREAMS as u64 });
                }
                let ratio = median(pairs.iter().map(Pair::ratio).collect());
                let added = median(pairs.iter().map(|p| p.config_cpu() - p.raw_cpu()).collect());
                raw_rates.extend(pairs.iter().map(Pair::raw_rate));
                raw_cpus.extend(pairs.iter().map(Pair::raw_cpu));
                cells.push(format!("{ratio:.3} ({added:+.1} ns)"));
                if size == 16 && TARGETED_KINDS.contains(&kind.name) && TARGETED.contains(&c) {
                    let met = ratio >= 0.93 && added <= 10.0;
                    verdicts.push(format!(
                        "{} {size} B, {}: {ratio:.3} of raw, {added:+.1} ns CPU/msg: {}",
                        kind.name,
                        CONFIGS[c],
                        if met { "met" } else { "NOT met" }
                    ));
                }
            }
            println!(
                "| {} {size} B | {:.0} | {:.1} | {} |",
                kind.name,
                median(raw_rates),
                median(raw_cpus),
                cells.join(" | ")
            );
        }
    }
    println!("\nCells: the configuration's msg/s over raw's (server CPU ns per message it added).");
    println!("\nTarget (16 B client streaming and bidi: >= 0.93 of raw, <= 10 ns CPU per message added):\n");
    for verdict in verdicts {
        println!("- {verdict}");
    }
}
