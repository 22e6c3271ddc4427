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

use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput};
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

fn inbound(c: &mut Criterion, rt: &Runtime, messages: u64) {
    let body = frames(messages as usize, SIZE);
    let mut group = c.benchmark_group("in_memory/inbound_16B");
    group.throughput(Throughput::Elements(messages));
    group.sampling_mode(SamplingMode::Flat);
    let raw = || timed(|| assert_eq!(rt.block_on(drain_inbound(&Raw, black_box(body.clone()))), messages));
    group.bench_function("raw", |b| b.iter_custom(|iters| (0..iters).map(|_| raw()).sum()));
    fn config<S: Bench>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        rt: &Runtime,
        name: &str,
        service: S,
        body: &bytes::Bytes,
        messages: u64,
        raw: &dyn Fn() -> std::time::Duration,
    ) {
        let scenario = format!("inbound {name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let candidate =
                    || timed(|| assert_eq!(rt.block_on(drain_inbound(&service, black_box(body.clone()))), messages));
                let (baseline, candidate) = alternate(iters, raw, candidate);
                PAIRS.record(&scenario, Pair { iters, messages_per_iter: messages, baseline, candidate });
                candidate
            })
        });
    }
    config(&mut group, rt, "monitor", Monitored, &body, messages, &raw);
    config(&mut group, rt, "rate", Rated, &body, messages, &raw);
    config(&mut group, rt, "budget", Budgeted, &body, messages, &raw);
    config(&mut group, rt, "all_three", Intercepted, &body, messages, &raw);
    config(&mut group, rt, "rate_keyed", RatedKeyed, &body, messages, &raw);
    config(&mut group, rt, "rate_backend", RatedBackend, &body, messages, &raw);
    group.finish();
}

fn bidi(c: &mut Criterion, rt: &Runtime, messages: u64) {
    let body = frames(messages as usize, SIZE);
    let mut group = c.benchmark_group("in_memory/bidi_echo_16B");
    group.throughput(Throughput::Elements(messages));
    group.sampling_mode(SamplingMode::Flat);
    let raw = || timed(|| assert_eq!(rt.block_on(drain_bidi(&Raw, black_box(body.clone()))), messages));
    group.bench_function("raw", |b| b.iter_custom(|iters| (0..iters).map(|_| raw()).sum()));
    fn config<S: Bench>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        rt: &Runtime,
        name: &str,
        service: S,
        body: &bytes::Bytes,
        messages: u64,
        raw: &dyn Fn() -> std::time::Duration,
    ) {
        let scenario = format!("bidi_echo {name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let candidate =
                    || timed(|| assert_eq!(rt.block_on(drain_bidi(&service, black_box(body.clone()))), messages));
                let (baseline, candidate) = alternate(iters, raw, candidate);
                PAIRS.record(&scenario, Pair { iters, messages_per_iter: messages, baseline, candidate });
                candidate
            })
        });
    }
    config(&mut group, rt, "wrapped", Wrapped, &body, messages, &raw);
    config(&mut group, rt, "monitor", Monitored, &body, messages, &raw);
    config(&mut group, rt, "all_three", Intercepted, &body, messages, &raw);
    config(&mut group, rt, "all_three_per_method", LimitedPerMethod, &body, messages, &raw);
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
