//! Instructions per message, counted by callgrind: exact, and untouched by
//! whatever else the machine runs.
//!
//! The in-memory workloads of `in_memory.rs` (the `ClientStream` handler on
//! prebuilt frames, the `ServerStream` handler's stream drained) and the
//! `Bidi` echo (the handler on prebuilt frames, its boxed response stream
//! drained as tonic's encoder polls it: each message passes `Inbound` and
//! `Outbound`). This binary runs itself under
//! `valgrind --tool=callgrind`, once per workload, configuration and number
//! of messages (`INSTRUCTIONS_CHILD=workload:config:messages`), counting only
//! inside the workload's function (`--toggle-collect`); the difference
//! between two numbers of messages, over the difference in messages, is the
//! count per message, free of what every run does once (building the
//! method, the runtime).
//!
//! `INSTRUCTIONS_WORKLOADS=bidi,inbound`, `INSTRUCTIONS_CONFIGS=raw,wrapped`:
//! a part of the table. Without valgrind it says so and does nothing.

use std::process::Command;

use bytes::Bytes;
use interceptor_benches::{
    drain_bidi, drain_inbound, drain_outbound, frames, pb::bench_server::Bench, LimitedPerMethod, LimitedPerStream,
    Monitored, Raw, Wrapped,
};

const SIZE: usize = 16;
/// The two numbers of messages per run.
const MESSAGES: [u64; 2] = [10_000, 30_000];

const WORKLOADS: [(&str, &str); 3] =
    [("bidi", "bidi echo"), ("inbound", "inbound (client streaming)"), ("outbound", "outbound (server streaming)")];

const CONFIGS: [(&str, &str); 5] = [
    ("raw", "raw"),
    ("wrapped", "wrappers, no interceptor"),
    ("monitor", "monitor"),
    ("per_stream", "monitor + rate + budget, per stream"),
    ("per_method", "monitor + rate + budget, per method"),
];

/// The function callgrind counts in (`--toggle-collect`): the future of
/// [`child`]'s async block, into which the workload inlines.
const COLLECTED: &str = "instructions::child::{{closure}}";

async fn run<S: Bench>(service: S, workload: &str, frames: Bytes, messages: u64) -> u64 {
    match workload {
        "bidi" => drain_bidi(&service, frames).await,
        "inbound" => drain_inbound(&service, frames).await,
        _ => drain_outbound(&service, messages, SIZE).await,
    }
}

fn child(spec: &str) {
    let mut parts = spec.split(':');
    let (Some(workload), Some(config), Some(messages)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("INSTRUCTIONS_CHILD=workload:config:messages, not {spec}");
    };
    let messages: u64 = messages.parse().expect("a number of messages");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // Made before counting starts.
    let frames = frames(messages as usize, SIZE);
    let moved = rt.block_on(async {
        match config {
            "raw" => run(Raw, workload, frames, messages).await,
            "wrapped" => run(Wrapped, workload, frames, messages).await,
            "monitor" => run(Monitored, workload, frames, messages).await,
            "per_stream" => run(LimitedPerStream, workload, frames, messages).await,
            "per_method" => run(LimitedPerMethod, workload, frames, messages).await,
            other => panic!("no configuration {other}"),
        }
    });
    assert_eq!(moved, messages);
}

/// Instructions callgrind counted in one child run.
fn count(workload: &str, config: &str, messages: u64) -> u64 {
    let exe = std::env::current_exe().expect("this binary");
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(format!("--toggle-collect={COLLECTED}"))
        .arg(exe)
        .env("INSTRUCTIONS_CHILD", format!("{workload}:{config}:{messages}"))
        .output()
        .expect("run valgrind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{stderr}");
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :").map(|(_, n)| n.trim().parse().expect("a count")))
        .unwrap_or_else(|| panic!("no count in callgrind's output:\n{stderr}"))
}

/// Instructions per message of one workload and configuration.
fn per_message(workload: &str, config: &str) -> f64 {
    let [few, many] = MESSAGES.map(|m| count(workload, config, m));
    (many as f64 - few as f64) / (MESSAGES[1] - MESSAGES[0]) as f64
}

fn main() {
    if let Ok(spec) = std::env::var("INSTRUCTIONS_CHILD") {
        return child(&spec);
    }
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| f.contains("instructions")) {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("instructions: valgrind is not installed; nothing to count");
        return;
    }
    let pick = |name: &str| std::env::var(name).ok().map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>());
    let picked = |list: &Option<Vec<String>>, key: &str| list.as_ref().is_none_or(|l| l.iter().any(|k| k == key));
    let (workloads, configs) = (pick("INSTRUCTIONS_WORKLOADS"), pick("INSTRUCTIONS_CONFIGS"));
    let configs: Vec<_> = CONFIGS.iter().filter(|(key, _)| *key == "raw" || picked(&configs, key)).collect();

    println!(
        "\nInstructions per message ({SIZE} B, callgrind; runs of {} and {} messages):\n",
        MESSAGES[0], MESSAGES[1]
    );
    let names: Vec<&str> = configs.iter().skip(1).map(|(_, name)| *name).collect();
    println!("| workload | raw | {} |", names.join(" | "));
    println!("|---|---:|{}", "---:|".repeat(names.len()));
    for (workload, title) in WORKLOADS.iter().filter(|(key, _)| picked(&workloads, key)) {
        let raw = per_message(workload, "raw");
        let cells: Vec<String> =
            configs.iter().skip(1).map(|(config, _)| format!("{:+.1}", per_message(workload, config) - raw)).collect();
        println!("| {title} | {raw:.1} | {} |", cells.join(" | "));
    }
    println!("\nCells after raw: instructions each configuration adds per message.");
}
