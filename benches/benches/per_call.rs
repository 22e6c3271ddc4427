//! Nanoseconds per call that option values evaluated at run time add, without
//! a network: `ServerStream` is called directly for one 16 B message and its
//! response stream drained, for `rate` given as a literal (`Rated`), as a
//! `const` (`RatedConst`: converted once, when the method's interceptors are
//! built) and from the instance (`RatedPerInstance`, `rate = self.rate`:
//! evaluated on every call, and the method's interceptors looked up by the
//! value); and what a call of a keyed rate (`RatedKeyed`: the key read and
//! looked up in the map) and of a rate through a backend (`RatedBackend`:
//! the limiter's key made, one lease) costs. Each is measured in
//! alternation with the literal one; the table
//! printed at the end gives the difference per call.

use criterion::{Criterion, SamplingMode};
use interceptor_benches::{
    alternate, drain_outbound, median, pb::bench_server::Bench, quick, timed, Pair, Pairs, Rated, RatedBackend,
    RatedConst, RatedKeyed, RatedPerInstance, Raw,
};
use tokio::runtime::Runtime;

static PAIRS: Pairs = Pairs::new();

/// Calls per timed iteration.
const CALLS: u64 = 1_000;

fn calls<S: Bench>(rt: &Runtime, service: &S) {
    rt.block_on(async {
        for _ in 0..CALLS {
            assert_eq!(drain_outbound(service, 1, 16).await, 1);
        }
    })
}

fn main() {
    let quick = quick();
    let mut c = Criterion::default()
        .sample_size(if quick { 10 } else { 30 })
        .warm_up_time(std::time::Duration::from_millis(if quick { 200 } else { 1000 }))
        .measurement_time(std::time::Duration::from_millis(if quick { 600 } else { 3000 }))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("per_call/server_stream_1x16B");
    group.sampling_mode(SamplingMode::Flat);
    let literal = || timed(|| calls(&rt, &Rated));
    fn config<S: Bench>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        rt: &Runtime,
        name: &str,
        service: S,
        literal: &dyn Fn() -> std::time::Duration,
    ) {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let candidate = || timed(|| calls(rt, &service));
                let (baseline, candidate) = alternate(iters, literal, candidate);
                PAIRS.record(name, Pair { iters, messages_per_iter: CALLS, baseline, candidate });
                candidate
            })
        });
    }
    config(&mut group, &rt, "raw", Raw, &literal);
    config(&mut group, &rt, "const", RatedConst, &literal);
    config(&mut group, &rt, "self", RatedPerInstance::default(), &literal);
    config(&mut group, &rt, "keyed", RatedKeyed, &literal);
    config(&mut group, &rt, "backend", RatedBackend, &literal);
    group.finish();
    c.final_summary();

    println!("\nIn memory, one call of one 16 B message, against `rate = 1_000_000_000` (medians over samples):\n");
    println!("| rate given as | literal ns/call | this ns/call | difference ns/call |");
    println!("|---|---:|---:|---:|");
    for (name, pairs) in PAIRS.scenarios() {
        let literal = median(pairs.iter().map(Pair::baseline_ns).collect());
        let this = median(pairs.iter().map(Pair::candidate_ns).collect());
        let added = median(pairs.iter().map(|p| p.candidate_ns() - p.baseline_ns()).collect());
        let name = match name.as_str() {
            "raw" => "(no interceptor)",
            "const" => "`rate = BENCH_RATE` (a const)",
            "keyed" => "`rate(.., key = metadata(..))`: the key looked up (one key)",
            "backend" => "`rate(.., backend = ..)`: its key made, one lease answered at once",
            _ => "`rate = self.rate`",
        };
        println!("| {name} | {literal:.0} | {this:.0} | {added:+.0} |");
    }
}
