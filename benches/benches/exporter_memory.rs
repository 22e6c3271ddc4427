//! The memory a metrics-exporter-prometheus recorder holds between two
//! scrapes while monitored streams move messages as fast as they can.
//!
//! The exporter keeps every histogram sample (with its time) until it next
//! aggregates them (its upkeep, or a scrape). v0.1's monitor recorded a
//! message-size sample per message, so that memory grew with the message
//! rate; now a call records one per direction when it ends.
//!
//! Each side runs in a process of its own (this binary runs itself with
//! `EXPORTER_CHILD=batched|per-message`), with the recorder installed and
//! neither upkeep nor a scrape until the end:
//! - `batched`: the monitored bench service in memory (its server-streaming
//!   handler drained directly, 1,000,000 messages of 16 B per call) on two
//!   threads for `EXPORTER_SECONDS` (5; 2 with `BENCH_QUICK=1`), resident
//!   memory sampled every 100 ms;
//! - `per-message`: what v0.1's monitor did per message, replayed on the same
//!   recorder (a counter increment and a histogram sample, under the same
//!   names), on two threads, for 20,000,000 messages: one second of traffic
//!   at 20M messages a second.
//!
//! Then one scrape (`PrometheusHandle::render`), and memory again.

use std::{
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use interceptor_benches::{drain_outbound, quick, rss_bytes, MonitoredExported};
use metrics::Label;

fn child(mode: &str) {
    let handle =
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("install the recorder");
    let seconds: f64 =
        std::env::var("EXPORTER_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick() { 2.0 } else { 5.0 });
    let rss_before = rss_bytes().unwrap_or(0);
    let peak = AtomicU64::new(rss_before);
    let messages = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Relaxed) {
                peak.fetch_max(rss_bytes().unwrap_or(0), Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        match mode {
            "batched" => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                    let workers: Vec<_> = (0..2)
                        .map(|_| {
                            tokio::spawn(async move {
                                let mut n = 0;
                                while Instant::now() < deadline {
                                    n += drain_outbound(&MonitoredExported, 1_000_000, 16).await;
                                }
                                n
                            })
                        })
                        .collect();
                    for worker in workers {
                        messages.fetch_add(worker.await.expect("a worker"), Relaxed);
                    }
                });
            }
            "per-message" => {
                let labels = [
                    Label::from_static_parts("grpc_type", "server_stream"),
                    Label::from_static_parts("grpc_service", "bench.Bench"),
                    Label::from_static_parts("grpc_method", "ServerStream"),
                ];
                let counter = metrics::counter!("grpc_server_msg_sent_total", labels.iter());
                let histogram = metrics::histogram!("grpc_server_msg_sent_bytes", labels.iter());
                std::thread::scope(|inner| {
                    for _ in 0..2 {
                        inner.spawn(|| {
                            for _ in 0..10_000_000u64 {
                                counter.increment(1);
                                histogram.record(16.0);
                            }
                            messages.fetch_add(10_000_000, Relaxed);
                        });
                    }
                });
            }
            other => panic!("EXPORTER_CHILD={other}: batched or per-message"),
        }
        done.store(true, Relaxed);
    });
    let elapsed = start.elapsed();
    let rss_after = rss_bytes().unwrap_or(0);
    let scrape = handle.render();
    let rss_scraped = rss_bytes().unwrap_or(0);
    println!(
        "RESULT mode={mode} messages={} seconds={:.3} rss_before={rss_before} rss_peak={} rss_after={rss_after} \
         rss_scraped={rss_scraped} scrape_bytes={}",
        messages.load(Relaxed),
        elapsed.as_secs_f64(),
        peak.load(Relaxed).max(rss_after),
        scrape.len()
    );
}

fn run_child(mode: &str) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe).env("EXPORTER_CHILD", mode).output().expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "child {mode} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().find(|l| l.starts_with("RESULT ")).expect("a RESULT line").to_owned()
}

fn main() {
    if let Ok(mode) = std::env::var("EXPORTER_CHILD") {
        child(&mode);
        return;
    }
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| f.contains("exporter_memory")) {
        return;
    }
    println!("\nmetrics-exporter-prometheus recorder, no upkeep and no scrape until the end:\n");
    println!(
        "| monitor | messages | msg/s | resident before | growth at peak | per million messages | after the scrape |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for mode in ["batched", "per-message"] {
        let line = run_child(mode);
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        let (messages, before) = (field("messages"), field("rss_before"));
        let growth = field("rss_peak") - before;
        let label = if mode == "batched" {
            "now: one sample per call and direction"
        } else {
            "v0.1: a sample per message (replayed)"
        };
        println!(
            "| {label} | {:.0}M | {:.1}M | {:.1} MiB | {:+.1} MiB | {:+.2} MiB | {:+.1} MiB |",
            messages / 1e6,
            messages / field("seconds") / 1e6,
            mib(before),
            mib(growth),
            mib(growth) / (messages / 1e6),
            mib(field("rss_scraped") - before),
        );
    }
}
