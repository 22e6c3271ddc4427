//! Nanoseconds per message added by the interceptors, without a network.
//!
//! - outbound: the `ServerStream` handler is called directly and its response
//!   stream (a `Repeat` of one 16 B payload, wrapped in `Outbound` when
//!   intercepted) drained;
//! - inbound: the `ClientStream` handler is called directly on a real
//!   `tonic::Streaming<Payload>` that decodes prebuilt gRPC frames from memory
//!   (wrapped in `Inbound` when intercepted), and drains it;
//! - bidi echo: the `Bidi` handler is called directly on such a stream and
//!   its response stream (the request stream, boxed; wrapped in `Outbound`
//!   and boxed again when intercepted) drained through its boxed type, as
//!   tonic's encoder polls it: each message passes both wrappers, each behind
//!   a `dyn Stream`.
//!
//! Each configuration (monitor, rate, budget, all three; rate per key, and
//! rate through a backend that answers leases at once) is measured in
//! alternation with the raw service, iteration by iteration, and the table
//! printed at the end gives the difference per message: robust to the machine
//! being busy with something else, which absolute numbers are not.

use std::{hint::black_box, time::Duration};

use bytes::Bytes;

use criterion::{measurement::WallTime, Criterion, SamplingMode, Throughput};
use interceptor_benches::{
    alternate, drain_bidi, drain_inbound, drain_outbound, frames, median, pb::bench_server::Bench, quick, timed,
    Budgeted, Intercepted, LimitedPerMethod, Monitored, Pair, Pairs, Rated, RatedBackend, RatedKeyed, Raw, Wrapped,
};
use tokio::runtime::Runtime;

static PAIRS: Pairs = Pairs::new();

const SIZE: usize = 16;

fn runtime() -> Runtime {
    // `budget`'s duration timer needs tokio's time driver.
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// What is drained, without a network.
#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// `ServerStream`: the outbound direction alone.
    Outbound,
    /// `ClientStream` on prebuilt frames: the inbound direction alone.
    Inbound,
    /// `Bidi` on prebuilt frames: the echo, both directions.
    BidiEcho,
}

/// One workload, the same for every configuration: for those that read a
/// request stream, on the same prebuilt frames.
struct InMemory<'a> {
    rt: &'a Runtime,
    workload: Workload,
    frames: Bytes,
    messages: u64,
}

impl<'a> InMemory<'a> {
    fn new(rt: &'a Runtime, workload: Workload, messages: u64) -> Self {
        let frames = if workload == Workload::Outbound { Bytes::new() } else { frames(messages as usize, SIZE) };
        InMemory { rt, workload, frames, messages }
    }

    fn name(&self) -> &'static str {
        match self.workload {
            Workload::Outbound => "outbound",
            Workload::Inbound => "inbound",
            Workload::BidiEcho => "bidi_echo",
        }
    }

    /// One iteration: `service`'s handler called, its streams drained.
    fn time<S: Bench>(&self, service: &S) -> Duration {
        timed(|| {
            let frames = black_box(self.frames.clone());
            let moved = self.rt.block_on(async {
                match self.workload {
                    Workload::Outbound => drain_outbound(service, self.messages, SIZE).await,
                    Workload::Inbound => drain_inbound(service, frames).await,
                    Workload::BidiEcho => drain_bidi(service, frames).await,
                }
            });
            assert_eq!(moved, self.messages);
        })
    }

    /// The workload's group, with raw measured alone first.
    fn group<'c>(&self, c: &'c mut Criterion) -> criterion::BenchmarkGroup<'c, WallTime> {
        let mut group = c.benchmark_group(format!("in_memory/{}_16B", self.name()));
        group.throughput(Throughput::Elements(self.messages));
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("raw", |b| b.iter_custom(|iters| (0..iters).map(|_| self.time(&Raw)).sum()));
        group
    }

    /// `service` in alternation with raw, recorded for the table as
    /// "workload name".
    fn measure<S: Bench>(&self, group: &mut criterion::BenchmarkGroup<'_, WallTime>, name: &str, service: S) {
        let scenario = format!("{} {name}", self.name());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (baseline, candidate) = alternate(iters, || self.time(&Raw), || self.time(&service));
                PAIRS.record(&scenario, Pair { iters, messages_per_iter: self.messages, baseline, candidate });
                candidate
            })
        });
    }
}

/// One direction at a time: each interceptor alone, all three, and rate per
/// key and through a backend.
fn one_direction(c: &mut Criterion, rt: &Runtime, workload: Workload, messages: u64) {
    let bench = InMemory::new(rt, workload, messages);
    let mut group = bench.group(c);
    bench.measure(&mut group, "monitor", Monitored);
    bench.measure(&mut group, "rate", Rated);
    bench.measure(&mut group, "budget", Budgeted);
    bench.measure(&mut group, "all_three", Intercepted);
    bench.measure(&mut group, "rate_keyed", RatedKeyed);
    bench.measure(&mut group, "rate_backend", RatedBackend);
    group.finish();
}

/// The echo: the wrappers alone, monitor, all three per stream and per method.
fn bidi(c: &mut Criterion, rt: &Runtime, messages: u64) {
    let bench = InMemory::new(rt, Workload::BidiEcho, messages);
    let mut group = bench.group(c);
    bench.measure(&mut group, "wrapped", Wrapped);
    bench.measure(&mut group, "monitor", Monitored);
    bench.measure(&mut group, "all_three", Intercepted);
    bench.measure(&mut group, "all_three_per_method", LimitedPerMethod);
    group.finish();
}

fn print_table() {
    let scenarios = PAIRS.scenarios();
    if scenarios.is_empty() {
        return;
    }
    println!("\nIn memory, 16 B messages, each configuration in alternation with raw (medians over samples):\n");
    println!("| direction | interceptors | raw ns/msg | intercepted ns/msg | added ns/msg | target <= 25 |");
    println!("|---|---|---:|---:|---:|---|");
    for (scenario, pairs) in scenarios {
        let (direction, config) = scenario.split_once(' ').unwrap_or((&scenario, ""));
        let raw = median(pairs.iter().map(Pair::baseline_ns).collect());
        let cand = median(pairs.iter().map(Pair::candidate_ns).collect());
        let added = median(pairs.iter().map(|p| p.candidate_ns() - p.baseline_ns()).collect());
        let met = if config == "all_three" && direction != "bidi_echo" {
            if added <= 25.0 {
                "met"
            } else {
                "NOT met"
            }
        } else {
            ""
        };
        println!("| {direction} | {config} | {raw:.1} | {cand:.1} | {added:.1} | {met} |");
    }
}

fn main() {
    let quick = quick();
    let mut c = Criterion::default()
        .sample_size(if quick { 10 } else { 30 })
        .warm_up_time(std::time::Duration::from_millis(if quick { 200 } else { 1000 }))
        .measurement_time(std::time::Duration::from_millis(if quick { 600 } else { 3000 }))
        .configure_from_args();
    let rt = runtime();
    let messages = if quick { 20_000 } else { 100_000 };
    one_direction(&mut c, &rt, Workload::Outbound, messages);
    one_direction(&mut c, &rt, Workload::Inbound, messages);
    bidi(&mut c, &rt, messages);
    c.final_summary();
    print_table();
}
