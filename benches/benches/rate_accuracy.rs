//! `rate` on the real clock, over loopback: what a tonic client uploading as
//! fast as it can gets, against what it was promised, at 10 to 100,000
//! messages a second, with a limiter per stream and one per method; and how
//! streams sharing a method's limit share it.
//!
//! Each rate has a server of its own; one client connection uploads
//! `3 × N + 1` messages (`N / 3 + 1` with `BENCH_QUICK=1`) in one
//! client-streaming call, and the handler notes when each arrived. The rate
//! measured is over the messages after the first quarter (past the burst the
//! stream may start with): their number over the time they took. The runs
//! are one after another, so that they do not compete for the CPU.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use futures_util::Stream;
use interceptor_benches::{
    connect, payload,
    pb::{
        bench_server::{Bench, BenchServer},
        Count, Payload,
    },
    quick,
};
use tonic::{
    transport::{server::TcpIncoming, Server},
    Request, Response, Status, Streaming,
};

/// When each message of each upload arrived, by server.
type Arrivals = HashMap<&'static str, Vec<Vec<Instant>>>;

fn arrivals() -> std::sync::MutexGuard<'static, Arrivals> {
    static ARRIVALS: OnceLock<Mutex<Arrivals>> = OnceLock::new();
    ARRIVALS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Defines `$ty`, a bench service whose `ClientStream` notes arrival times,
/// with `rate(..)` as given.
macro_rules! limited {
    ($ty:ident: $($rate:tt)*) => {
        #[derive(Clone, Copy)]
        struct $ty;

        #[interceptor_runtime::intercept(rate($($rate)*))]
        #[tonic::async_trait]
        impl Bench for $ty {
            type ServerStreamStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

            async fn server_stream(&self, _: Request<Count>) -> Result<Response<Self::ServerStreamStream>, Status> {
                Err(Status::unimplemented("not here"))
            }

            async fn client_stream(&self, request: Request<Streaming<Payload>>) -> Result<Response<Count>, Status> {
                let mut stream = request.into_inner();
                let mut times = Vec::new();
                while stream.message().await?.is_some() {
                    times.push(Instant::now());
                }
                let messages = times.len() as u64;
                arrivals().entry(stringify!($ty)).or_default().push(times);
                Ok(Response::new(Count { messages, size: 0 }))
            }

            type BidiStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

            async fn bidi(&self, _: Request<Streaming<Payload>>) -> Result<Response<Self::BidiStream>, Status> {
                Err(Status::unimplemented("not here"))
            }

            type RelayStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

            async fn relay(&self, _: Request<Streaming<Payload>>) -> Result<Response<Self::RelayStream>, Status> {
                Err(Status::unimplemented("not here"))
            }
        }
    };
}

limited!(Stream10: recv = 10);
limited!(Stream200: recv = 200);
limited!(Stream2000: recv = 2000);
limited!(Stream20k: recv = 20_000);
limited!(Stream100k: recv = 100_000);
limited!(Method10: recv = 10, scope = method);
limited!(Method200: recv = 200, scope = method);
limited!(Method2000: recv = 2000, scope = method);
limited!(Method20k: recv = 20_000, scope = method);
limited!(Method100k: recv = 100_000, scope = method);
limited!(Shared: recv = 4000, scope = method);

async fn serve<S: Bench>(service: S) -> std::net::SocketAddr {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1").with_nodelay(Some(true));
    let addr = incoming.local_addr().expect("local address");
    tokio::spawn(Server::builder().add_service(BenchServer::new(service)).serve_with_incoming(incoming));
    addr
}

/// Uploads `messages` 16 B payloads as fast as the server takes them.
async fn upload(addr: std::net::SocketAddr, messages: u64) -> Duration {
    let mut client = connect(addr).await;
    let start = Instant::now();
    let p = payload(16);
    let outgoing = futures_util::stream::iter((0..messages).map(move |_| p.clone()));
    let count = client.client_stream(outgoing).await.expect("client_stream").into_inner();
    assert_eq!(count.messages, messages);
    start.elapsed()
}

/// The rate over the messages past the first quarter.
fn measured_rate(times: &[Instant]) -> f64 {
    let from = times.len() / 4;
    (times.len() - 1 - from) as f64 / (times[times.len() - 1] - times[from]).as_secs_f64()
}

async fn accuracy<S: Bench>(service: S, key: &'static str, per_second: u64, seconds: f64) -> f64 {
    let addr = serve(service).await;
    upload(addr, (seconds * per_second as f64) as u64 + 1).await;
    let times = arrivals().remove(key).expect("the upload's times").pop().expect("one upload");
    measured_rate(&times)
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| f.contains("rate_accuracy")) {
        return;
    }
    let seconds = if quick() { 1.0 } else { 3.0 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        println!(
            "\nA client uploading as fast as it can for {seconds} s, one after another (rate measured / promised):\n"
        );
        println!("| promised | scope = stream | scope = method |");
        println!("|---:|---:|---:|");
        let rows = [
            (10, accuracy(Stream10, "Stream10", 10, seconds).await, accuracy(Method10, "Method10", 10, seconds).await),
            (
                200,
                accuracy(Stream200, "Stream200", 200, seconds).await,
                accuracy(Method200, "Method200", 200, seconds).await,
            ),
            (
                2000,
                accuracy(Stream2000, "Stream2000", 2000, seconds).await,
                accuracy(Method2000, "Method2000", 2000, seconds).await,
            ),
            (
                20_000,
                accuracy(Stream20k, "Stream20k", 20_000, seconds).await,
                accuracy(Method20k, "Method20k", 20_000, seconds).await,
            ),
            (
                100_000,
                accuracy(Stream100k, "Stream100k", 100_000, seconds).await,
                accuracy(Method100k, "Method100k", 100_000, seconds).await,
            ),
        ];
        for (promised, stream, method) in rows {
            let p = promised as f64;
            println!("| {promised}/s | {stream:.1}/s ({:.4}) | {method:.1}/s ({:.4}) |", stream / p, method / p);
        }

        // Streams sharing a method's 4000/s, for 3 s.
        let addr = serve(Shared).await;
        for uploads in [4u64, 8] {
            let per = 12_000 / uploads;
            let start = Instant::now();
            let done = futures_util::future::join_all((0..uploads).map(|_| upload(addr, per))).await;
            let times = arrivals().remove("Shared").expect("the uploads' times");
            let finished: Vec<String> = done.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect();
            // Each stream's share of every 1 s window while all run (from
            // 100 ms in, in steps of 100 ms).
            let all_run = times.iter().map(|t| *t.last().expect("a message")).min().expect("uploads") - start;
            let mut worst: f64 = 0.0;
            let mut window = Duration::from_millis(100);
            while window + Duration::from_secs(1) <= all_run {
                let (from, to) = (start + window, start + window + Duration::from_secs(1));
                let counts: Vec<usize> =
                    times.iter().map(|t| t.iter().filter(|at| (from..to).contains(at)).count()).collect();
                let total: usize = counts.iter().sum();
                for count in counts {
                    worst = worst.max((count as f64 * uploads as f64 / total as f64 - 1.0).abs());
                }
                window += Duration::from_millis(100);
            }
            println!(
                "\n{uploads} uploads of {per} sharing 4000/s (scope = method): finished after {} s; \
                 total {:.1}/s; worst share of a 1 s window off by {:.1}% from 1/{uploads}",
                finished.join(", "),
                (per * uploads) as f64 / done.iter().max().expect("uploads").as_secs_f64(),
                100.0 * worst
            );
        }
    });
}
