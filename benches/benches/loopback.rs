//! Raw tonic against the intercepted service (monitor, rate and budget
//! together), over loopback, in the same run.
//!
//! Two servers on 127.0.0.1 in this process, one client connection to each.
//! Every scenario is measured in alternation, iteration by iteration (raw,
//! intercepted, intercepted, raw ...), and the table printed at the end gives
//! intercepted throughput over raw throughput, the median over samples: a
//! ratio that holds when the machine is busy with something else, which
//! absolute numbers do not.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use interceptor_benches::{
    alternate, bidi_ping_pong, bidi_pipelined, client_streaming, connect, median, pb::bench_client::BenchClient, quick,
    serve, server_streaming, timed, Budgeted, Intercepted, Monitored, Pair, Pairs, Rated, Raw,
};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

static PAIRS: Pairs = Pairs::new();

type Workload = for<'a> fn(
    &'a mut BenchClient<Channel>,
    u64,
    usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + 'a>>;

struct Scenario {
    name: &'static str,
    workload: Workload,
    size: usize,
    messages: u64,
    /// The ratio this scenario must keep, if the issue sets one.
    target: Option<f64>,
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let n = |full: u64| if quick { full / 5 } else { full };
    let server: Workload = |c, m, s| Box::pin(server_streaming(c, m, s));
    let client: Workload = |c, m, s| Box::pin(client_streaming(c, m, s));
    let pipelined: Workload = |c, m, s| Box::pin(bidi_pipelined(c, m, s));
    let ping_pong: Workload = |c, m, s| Box::pin(bidi_ping_pong(c, m, s));
    vec![
        Scenario { name: "server_stream_16B", workload: server, size: 16, messages: n(200_000), target: Some(0.93) },
        Scenario { name: "server_stream_1KiB", workload: server, size: 1024, messages: n(50_000), target: Some(0.97) },
        Scenario { name: "client_stream_16B", workload: client, size: 16, messages: n(200_000), target: Some(0.93) },
        Scenario { name: "client_stream_1KiB", workload: client, size: 1024, messages: n(50_000), target: Some(0.97) },
        Scenario {
            name: "bidi_pipelined_16B",
            workload: pipelined,
            size: 16,
            messages: n(100_000),
            target: Some(0.93),
        },
        Scenario {
            name: "bidi_pipelined_1KiB",
            workload: pipelined,
            size: 1024,
            messages: n(25_000),
            target: Some(0.97),
        },
        Scenario { name: "bidi_ping_pong_16B", workload: ping_pong, size: 16, messages: n(2_000), target: None },
        Scenario { name: "bidi_ping_pong_1KiB", workload: ping_pong, size: 1024, messages: n(2_000), target: None },
    ]
}

fn print_table(config: &str, targets: &[(&str, Option<f64>)]) {
    let scenarios = PAIRS.scenarios();
    if scenarios.is_empty() {
        return;
    }
    let config = if config == "all" { "monitor + rate + budget" } else { config };
    println!("\nLoopback, raw tonic vs {config}, in alternation (medians over samples):\n");
    println!("| scenario | raw msg/s | intercepted msg/s | added ns/msg | intercepted/raw | middle half of samples | target | |");
    println!("|---|---:|---:|---:|---:|---|---:|---|");
    for (scenario, pairs) in scenarios {
        let raw = median(pairs.iter().map(|p| 1e9 / p.baseline_ns()).collect());
        let cand = median(pairs.iter().map(|p| 1e9 / p.candidate_ns()).collect());
        let added = median(pairs.iter().map(|p| p.candidate_ns() - p.baseline_ns()).collect());
        let mut ratios: Vec<f64> = pairs.iter().map(Pair::throughput_ratio).collect();
        ratios.sort_by(|a, b| a.total_cmp(b));
        let ratio = median(ratios.clone());
        let (q1, q3) = (ratios[ratios.len() / 4], ratios[(3 * ratios.len()) / 4]);
        let target = targets.iter().find(|(n, _)| *n == scenario).and_then(|(_, t)| *t);
        let (target, met) = match target {
            Some(t) => (format!(">= {t:.2}"), if ratio >= t { "met" } else { "NOT met" }),
            None => ("-".to_owned(), ""),
        };
        println!(
            "| {scenario} | {raw:.0} | {cand:.0} | {added:.1} | {ratio:.3} | {q1:.3} - {q3:.3} | {target} | {met} |"
        );
    }
}

fn main() {
    let quick = quick();
    let mut c = Criterion::default()
        .sample_size(if quick { 10 } else { 40 })
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 1000 } else { 8000 }))
        .configure_from_args();

    // Two workers on this 2-core machine; client and servers share them.
    let rt: Runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // `BENCH_INTERCEPTORS=monitor|rate|budget` measures one interceptor
    // alone instead of all three.
    let config = std::env::var("BENCH_INTERCEPTORS").unwrap_or_else(|_| "all".to_owned());
    let (raw, intercepted) = rt.block_on(async {
        let raw = connect(serve(Raw).await).await;
        let intercepted = match config.as_str() {
            "monitor" => serve(Monitored).await,
            "rate" => serve(Rated).await,
            "budget" => serve(Budgeted).await,
            "all" => serve(Intercepted).await,
            other => panic!("BENCH_INTERCEPTORS={other}: monitor, rate, budget or all"),
        };
        (raw, connect(intercepted).await)
    });

    let scenarios = scenarios(quick);
    for scenario in &scenarios {
        let Scenario { name, workload, size, messages, .. } = *scenario;
        let mut group = c.benchmark_group(format!("loopback/{name}"));
        group.throughput(Throughput::Elements(messages));
        group.sampling_mode(SamplingMode::Flat);
        let run = |client: &BenchClient<Channel>| {
            let mut client = client.clone();
            timed(|| assert_eq!(rt.block_on(workload(&mut client, messages, size)), messages))
        };
        // Both functions run raw and intercepted in alternation and feed the
        // ratio; each reports its own side to criterion.
        for (id, report_intercepted) in [("raw", false), ("intercepted", true)] {
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let (base, cand) = alternate(iters, || run(&raw), || run(&intercepted));
                    PAIRS.record(name, Pair { iters, messages_per_iter: messages, baseline: base, candidate: cand });
                    if report_intercepted {
                        cand
                    } else {
                        base
                    }
                })
            });
        }
        group.finish();
    }
    c.final_summary();
    let targets: Vec<_> = scenarios.iter().map(|s| (s.name, s.target)).collect();
    print_table(&config, &targets);
}
