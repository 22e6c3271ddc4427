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

fn outbound(c: &mut Criterion, rt: &Runtime, messages: u64) {
    let mut group = c.benchmark_group("in_memory/outbound_16B");
    group.throughput(Throughput::Elements(messages));
    group.sampling_mode(SamplingMode::Flat);
    let raw = || timed(|| assert_eq!(rt.block_on(drain_outbound(&Raw, messages, SIZE)), messages));
    group.bench_function("raw", |b| b.iter_custom(|iters| (0..iters).map(|_| raw()).sum()));
    fn config<S: Bench>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        rt: &Runtime,
        name: &str,
        service: S,
        messages: u64,
        raw: &dyn Fn() -> std::time::Duration,
    ) {
        let scenario = format!("outbound {name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let candidate =
                    || timed(|| assert_eq!(rt.block_on(drain_outbound(&service, messages, SIZE)), messages));
                let (baseline, candidate) = alternate(iters, raw, candidate);
                PAIRS.record(&scenario, Pair { iters, messages_per_iter: messages, baseline, candidate });
                candidate
            })
        });
    }
    config(&mut group, rt, "monitor", Monitored, messages, &raw);
    config(&mut group, rt, "rate", Rated, messages, &raw);
    config(&mut group, rt, "budget", Budgeted, messages, &raw);
    config(&mut group, rt, "all_three", Intercepted, messages, &raw);
    config(&mut group, rt, "rate_keyed", RatedKeyed, messages, &raw);
    config(&mut group, rt, "rate_backend", RatedBackend, messages, &raw);
    group.finish();
}

/// What a handler called on in-memory frames does with them.
#[derive(Clone, Copy)]
enum OnFrames {
    /// `ClientStream`: the inbound direction alone.
    Inbound,
    /// `Bidi`: the echo, both directions.
    BidiEcho,
}

/// One workload on the same prebuilt frames, for every configuration.
struct Frames<'a> {
    rt: &'a Runtime,
    workload: OnFrames,
    body: Bytes,
    messages: u64,
}

impl<'a> Frames<'a> {
    fn new(rt: &'a Runtime, workload: OnFrames, messages: u64) -> Self {
        Frames { rt, workload, body: frames(messages as usize, SIZE), messages }
    }

    fn name(&self) -> &'static str {
        match self.workload {
            OnFrames::Inbound => "inbound",
            OnFrames::BidiEcho => "bidi_echo",
        }
    }

    /// One iteration: `service`'s handler on the frames, drained.
    fn time<S: Bench>(&self, service: &S) -> Duration {
        timed(|| {
            let body = black_box(self.body.clone());
            let moved = self.rt.block_on(async {
                match self.workload {
                    OnFrames::Inbound => drain_inbound(service, body).await,
                    OnFrames::BidiEcho => drain_bidi(service, body).await,
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

fn inbound(c: &mut Criterion, rt: &Runtime, messages: u64) {
    let frames = Frames::new(rt, OnFrames::Inbound, messages);
    let mut group = frames.group(c);
    frames.measure(&mut group, "monitor", Monitored);
    frames.measure(&mut group, "rate", Rated);
    frames.measure(&mut group, "budget", Budgeted);
    frames.measure(&mut group, "all_three", Intercepted);
    frames.measure(&mut group, "rate_keyed", RatedKeyed);
    frames.measure(&mut group, "rate_backend", RatedBackend);
    group.finish();
}

fn bidi(c: &mut Criterion, rt: &Runtime, messages: u64) {
    let frames = Frames::new(rt, OnFrames::BidiEcho, messages);
    let mut group = frames.group(c);
    frames.measure(&mut group, "wrapped", Wrapped);
    frames.measure(&mut group, "monitor", Monitored);
    frames.measure(&mut group, "all_three", Intercepted);
    frames.measure(&mut group, "all_three_per_method", LimitedPerMethod);
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
    outbound(&mut c, &rt, messages);
    inbound(&mut c, &rt, messages);
    bidi(&mut c, &rt, messages);
    c.final_summary();
    print_table();
}
