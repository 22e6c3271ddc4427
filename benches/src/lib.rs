//! What the benchmarks share: a small bench service stamped out raw and with
//! each interceptor configuration, in-memory requests, loopback servers and
//! clients, and the bookkeeping of measurements taken in alternation.
//!
//! The benches themselves are in `benches/` (`cargo bench -p interceptor-benches`);
//! `RESULTS.md` has the numbers.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use interceptor_runtime::testing::{grpc_frame, streaming_from_frames};
use tonic::{
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
    Request, Response, Status, Streaming,
};

/// The generated messages, client and server.
pub mod pb {
    tonic::include_proto!("bench");
}

use pb::{
    bench_client::BenchClient,
    bench_server::{Bench, BenchServer},
    Count, Payload,
};

/// Payloads are slices of this: cloning one copies nothing and touches no
/// reference count.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A payload of `size` zero bytes.
pub fn payload(size: usize) -> Payload {
    let data = if size <= ZEROS.len() { Bytes::from_static(&ZEROS[..size]) } else { Bytes::from(vec![0; size]) };
    Payload { data }
}

/// `left` clones of one payload: the response stream of `ServerStream`.
#[derive(Debug)]
pub struct Repeat {
    payload: Payload,
    left: u64,
}

impl Repeat {
    /// `messages` payloads of `size` bytes.
    pub fn new(messages: u64, size: usize) -> Self {
        Repeat { payload: payload(size), left: messages }
    }
}

impl Stream for Repeat {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        this.left -= 1;
        Poll::Ready(Some(Ok(this.payload.clone())))
    }
}

/// Defines `$ty`, the bench service (a unit struct, or one with the given
/// fields and their defaults), with the given attributes above its impl: the
/// handler bodies are the same for every configuration.
macro_rules! bench_service {
    (@impl $ty:ident $(, #[$attr:meta])*) => {
        $(#[$attr])*
        #[tonic::async_trait]
        impl Bench for $ty {
            type ServerStreamStream = Repeat;

            async fn server_stream(&self, request: Request<Count>) -> Result<Response<Self::ServerStreamStream>, Status> {
                let count = request.into_inner();
                Ok(Response::new(Repeat::new(count.messages, count.size as usize)))
            }

            async fn client_stream(&self, request: Request<Streaming<Payload>>) -> Result<Response<Count>, Status> {
                let mut stream = request.into_inner();
                let (mut messages, mut size) = (0, 0);
                while let Some(payload) = stream.message().await? {
                    messages += 1;
                    size += payload.data.len() as u64;
                }
                Ok(Response::new(Count { messages, size }))
            }

            // A boxed stream: `#[intercept]` on an impl wraps it in
            // `Outbound` as any other (no second box).
            type BidiStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send + 'static>>;

            async fn bidi(&self, request: Request<Streaming<Payload>>) -> Result<Response<Self::BidiStream>, Status> {
                Ok(Response::new(Box::pin(request.into_inner()) as Self::BidiStream))
            }

            type RelayStream = tokio_stream::wrappers::ReceiverStream<Result<Payload, Status>>;

            async fn relay(&self, request: Request<Streaming<Payload>>) -> Result<Response<Self::RelayStream>, Status> {
                let mut requests = request.into_inner();
                let (tx, rx) = tokio::sync::mpsc::channel(128);
                tokio::spawn(async move {
                    while let Some(item) = requests.next().await {
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
            }
        }
    };
    ($(#[$doc:meta])* $ty:ident { $($field:ident: $fty:ty = $value:expr),* $(,)? } $(, #[$attr:meta])* $(,)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $ty {
            $(
                #[allow(missing_docs)]
                pub $field: $fty,
            )*
        }

        impl Default for $ty {
            fn default() -> Self {
                $ty { $($field: $value),* }
            }
        }

        bench_service!(@impl $ty $(, #[$attr])*);
    };
    ($(#[$doc:meta])* $ty:ident $(, #[$attr:meta])* $(,)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;

        bench_service!(@impl $ty $(, #[$attr])*);
    };
}

bench_service! {
    /// No interceptor: plain tonic.
    Raw,
}

bench_service! {
    /// `monitor` alone.
    Monitored,
    #[interceptor_runtime::intercept(monitor)]
}

bench_service! {
    /// `rate` alone, at a rate no benchmark reaches (10⁹ messages per second
    /// each way): every message takes a permit, none waits.
    Rated,
    #[interceptor_runtime::intercept(rate = 1_000_000_000)]
}

bench_service! {
    /// `budget` alone, with limits no benchmark reaches: every message is
    /// counted and checked against each, none is refused.
    Budgeted,
    #[interceptor_runtime::intercept(budget(messages = 1_000_000_000_000, bytes = "1TiB", duration = "1h"))]
}

bench_service! {
    /// The wrappers and the call engine with no interceptor (`with = ()`):
    /// what every configuration pays before its interceptors do anything.
    Wrapped,
    #[interceptor_runtime::intercept(with = ())]
}

bench_service! {
    /// `monitor` alone, for the runs with a metrics recorder installed: its
    /// handles are made on its first call, so that call must come after the
    /// recorder is installed (and `Monitored`'s before, for runs without).
    MonitoredExported,
    #[interceptor_runtime::intercept(monitor)]
}

bench_service! {
    /// `monitor` plus what v0.1's monitor did per message with the `metrics`
    /// feature ([`PerMessageMetrics`]): the recorder's cost before batching,
    /// measured beside it.
    PerMessageExported,
    #[interceptor_runtime::intercept(monitor, with = PerMessageMetrics::new())]
}

/// v0.1's per-message export, replayed: a counter increment and a histogram
/// sample per message, on handles made once (by the method's first call, so
/// after the recorder is installed). Not part of the runtime: the bench's
/// baseline for the recorder's cost.
#[derive(Debug)]
pub struct PerMessageMetrics {
    handles: std::sync::OnceLock<[(metrics::Counter, metrics::Histogram); 2]>,
}

impl PerMessageMetrics {
    /// Handles made on the first call.
    pub fn new() -> Self {
        PerMessageMetrics { handles: std::sync::OnceLock::new() }
    }
}

impl Default for PerMessageMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl interceptor_runtime::Interceptor for PerMessageMetrics {
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        "per_message_metrics"
    }

    fn on_start(&self, ctx: &interceptor_runtime::CallContext, _: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        self.handles.get_or_init(|| {
            let info = ctx.method();
            let labels = [
                metrics::Label::from_static_parts("grpc_type", info.kind.as_str()),
                metrics::Label::from_static_parts("grpc_service", info.service),
                metrics::Label::from_static_parts("grpc_method", info.method),
            ];
            [
                (
                    metrics::counter!("v01_grpc_server_msg_received_total", labels.iter()),
                    metrics::histogram!("v01_grpc_server_msg_received_bytes", labels.iter()),
                ),
                (
                    metrics::counter!("v01_grpc_server_msg_sent_total", labels.iter()),
                    metrics::histogram!("v01_grpc_server_msg_sent_bytes", labels.iter()),
                ),
            ]
        });
        Ok(())
    }

    fn on_stream(&self, _: &(), _: &interceptor_runtime::CallContext, _: interceptor_runtime::Direction) {}

    #[inline]
    fn on_delivered<M: prost::Message + 'static>(
        &self,
        _: &(),
        _: &mut (),
        msg: &interceptor_runtime::MessageRef<'_, M>,
    ) {
        if let Some(handles) = self.handles.get() {
            let (count, size) = &handles[msg.direction() as usize];
            count.increment(1);
            size.record(msg.encoded_len() as f64);
        }
    }
}

bench_service! {
    /// monitor, rate and budget (with `streams`), each stream with its own
    /// rate limiter, at limits no benchmark reaches.
    LimitedPerStream,
    #[interceptor_runtime::intercept(
        monitor,
        rate = 1_000_000_000,
        budget(messages = 1_000_000_000_000, bytes = "1TiB", duration = "1h", streams = 100_000),
    )]
}

bench_service! {
    /// The same with one rate limiter per method, shared by all its streams.
    LimitedPerMethod,
    #[interceptor_runtime::intercept(
        monitor,
        rate(recv = 1_000_000_000, send = 1_000_000_000, scope = method),
        budget(messages = 1_000_000_000_000, bytes = "1TiB", duration = "1h", streams = 100_000),
    )]
}

bench_service! {
    /// All three, as the issue asks to measure them.
    Intercepted,
    #[interceptor_runtime::intercept(
        monitor,
        rate = 1_000_000_000,
        budget(messages = 1_000_000_000_000, bytes = "1TiB", duration = "1h"),
    )]
}

bench_service! {
    /// `rate` per key, kept in this process, at a rate no benchmark reaches:
    /// the bench's requests carry no key, so all share one
    /// (`on_missing_key = share`), looked up when each call starts; its
    /// streams take permits from the key's limiter in batches.
    RatedKeyed,
    #[interceptor_runtime::intercept(
        rate(recv = 1_000_000_000, send = 1_000_000_000, key = metadata("x-api-key"), on_missing_key = share),
    )]
}

/// A limiter backend in memory that grants every lease at once: the rate's
/// path through a backend (leases, and the messages between them) without
/// a network.
#[derive(Debug)]
pub struct InstantBackend;

impl interceptor_runtime::rate::LimiterBackend for InstantBackend {
    fn name(&self) -> &'static str {
        "instant"
    }

    fn lease(&self, request: interceptor_runtime::rate::LeaseRequest) -> interceptor_runtime::rate::LeaseFuture {
        let lease = interceptor_runtime::rate::Lease { permits: request.permits, wait: std::time::Duration::ZERO };
        Box::pin(std::future::ready(Ok(lease)))
    }
}

/// The backend of [`RatedBackend`].
pub static INSTANT_BACKEND: std::sync::LazyLock<interceptor_runtime::rate::Backend> =
    std::sync::LazyLock::new(|| interceptor_runtime::rate::Backend::new(InstantBackend));

bench_service! {
    /// `rate` through a backend ([`InstantBackend`]), as with Redis but with
    /// leases answered at once: a stream leases 1 permit, then twice as many
    /// each time up to a tenth of a second's worth, and counts them down.
    RatedBackend,
    #[interceptor_runtime::intercept(
        rate(recv = 1_000_000_000, send = 1_000_000_000, backend = INSTANT_BACKEND.clone()),
    )]
}

/// The rate of [`RatedConst`].
pub const BENCH_RATE: u64 = 1_000_000_000;

bench_service! {
    /// `rate` from a `const`: converted once per method, when its
    /// interceptors are built.
    RatedConst,
    #[interceptor_runtime::intercept(rate = BENCH_RATE)]
}

bench_service! {
    /// `rate` from the instance (`rate = self.rate`): evaluated on every call,
    /// and the method's interceptors looked up by the value.
    RatedPerInstance { rate: u64 = 1_000_000_000 },
    #[interceptor_runtime::intercept(rate = self.rate)]
}

/// `n` gRPC frames, each a payload of `size` bytes: a request body as a
/// client would send it.
pub fn frames(n: usize, size: usize) -> Bytes {
    let frame = grpc_frame(&payload(size));
    frame.repeat(n).into()
}

/// A real `tonic::Streaming<Payload>` reading `frames` from memory, in a
/// request as tonic hands it to a client-streaming handler.
pub fn inbound_request(frames: Bytes) -> Request<Streaming<Payload>> {
    Request::new(streaming_from_frames(frames))
}

/// Calls a service's `ServerStream` handler directly and drains its response
/// stream: the outbound direction, without a network.
pub async fn drain_outbound<S: Bench>(service: &S, messages: u64, size: usize) -> u64 {
    let request = Request::new(Count { messages, size: size as u64 });
    let stream = service.server_stream(request).await.expect("server_stream").into_inner();
    let mut stream = std::pin::pin!(stream);
    let mut n = 0;
    while let Some(item) = stream.next().await {
        std::hint::black_box(item.expect("a payload"));
        n += 1;
    }
    n
}

/// Calls a service's `ClientStream` handler directly on in-memory frames: the
/// inbound direction, without a network.
pub async fn drain_inbound<S: Bench>(service: &S, frames: Bytes) -> u64 {
    service.client_stream(inbound_request(frames)).await.expect("client_stream").into_inner().messages
}

/// Calls a service's `Bidi` handler directly on in-memory frames and drains
/// its response stream (the echo of the request stream) through its boxed
/// type, as tonic's encoder polls it: both directions, without a network.
pub async fn drain_bidi<S: Bench>(service: &S, frames: Bytes) -> u64 {
    let echoes = service.bidi(inbound_request(frames)).await.expect("bidi").into_inner();
    let mut echoes = std::pin::pin!(echoes);
    let mut n = 0;
    while let Some(item) = echoes.next().await {
        std::hint::black_box(item.expect("an echo"));
        n += 1;
    }
    n
}

/// Serves `service` on 127.0.0.1 (an unused port, TCP_NODELAY) from a task of
/// the current runtime.
pub async fn serve<S: Bench>(service: S) -> SocketAddr {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1").with_nodelay(Some(true));
    let addr = incoming.local_addr().expect("local address");
    tokio::spawn(Server::builder().add_service(BenchServer::new(service)).serve_with_incoming(incoming));
    addr
}

/// A client on a connection of its own.
pub async fn connect(addr: SocketAddr) -> BenchClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    BenchClient::new(channel)
}

/// `messages` payloads of `size` bytes from one `ServerStream` call; returns
/// how many arrived.
pub async fn server_streaming(client: &mut BenchClient<Channel>, messages: u64, size: usize) -> u64 {
    let mut stream =
        client.server_stream(Count { messages, size: size as u64 }).await.expect("server_stream").into_inner();
    let mut n = 0;
    while stream.message().await.expect("a payload").is_some() {
        n += 1;
    }
    n
}

/// `messages` payloads of `size` bytes sent in one `ClientStream` call;
/// returns how many the server counted.
pub async fn client_streaming(client: &mut BenchClient<Channel>, messages: u64, size: usize) -> u64 {
    client.client_stream(outgoing(messages, size)).await.expect("client_stream").into_inner().messages
}

/// `messages` payloads of `size` bytes, the same payload each time.
fn outgoing(messages: u64, size: usize) -> impl Stream<Item = Payload> + Send + 'static {
    let payload = payload(size);
    futures_util::stream::iter((0..messages).map(move |_| payload.clone()))
}

/// Reads echoes to their end; returns how many came.
async fn count_echoes(mut echoes: Streaming<Payload>) -> u64 {
    let mut n = 0;
    while echoes.message().await.expect("an echo").is_some() {
        n += 1;
    }
    n
}

/// `messages` payloads sent in one `Bidi` call without waiting for their
/// echoes, which are read as they come back; returns how many came back.
pub async fn bidi_pipelined(client: &mut BenchClient<Channel>, messages: u64, size: usize) -> u64 {
    count_echoes(client.bidi(outgoing(messages, size)).await.expect("bidi").into_inner()).await
}

/// As [`bidi_pipelined`], through `Relay`: the server's two directions run
/// in two tasks.
pub async fn relay_pipelined(client: &mut BenchClient<Channel>, messages: u64, size: usize) -> u64 {
    count_echoes(client.relay(outgoing(messages, size)).await.expect("relay").into_inner()).await
}

/// `messages` round trips in one `Bidi` call: each payload is sent once the
/// echo of the previous one came back.
pub async fn bidi_ping_pong(client: &mut BenchClient<Channel>, messages: u64, size: usize) -> u64 {
    let payload = payload(size);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(payload.clone()).await.expect("first ping");
    let mut echoes = client.bidi(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("bidi").into_inner();
    let mut n = 0;
    while let Some(_echo) = echoes.message().await.expect("an echo") {
        n += 1;
        if n == messages {
            break;
        }
        tx.send(payload.clone()).await.expect("ping");
    }
    drop(tx);
    while echoes.message().await.expect("the end").is_some() {}
    n
}

/// `BENCH_QUICK=1` (any value but `0`): shorter runs with fewer messages.
pub fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Runs `iters` pairs of one baseline and one candidate iteration, each
/// timing itself, alternating which goes first so that neither always runs
/// second (after the other's clean-up, say). Returns both totals.
pub fn alternate(
    iters: u64,
    mut baseline: impl FnMut() -> Duration,
    mut candidate: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let (mut base, mut cand) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iters {
        if i % 2 == 0 {
            base += baseline();
            cand += candidate();
        } else {
            cand += candidate();
            base += baseline();
        }
    }
    (base, cand)
}

/// Times one call of `f`.
pub fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// One sample of a paired measurement: `iters` iterations of
/// `messages_per_iter` messages each, baseline and candidate.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// Iterations in this sample.
    pub iters: u64,
    /// Messages per iteration.
    pub messages_per_iter: u64,
    /// The baseline's total time.
    pub baseline: Duration,
    /// The candidate's total time.
    pub candidate: Duration,
}

impl Pair {
    /// Messages in this sample, each side.
    pub fn messages(&self) -> f64 {
        (self.iters * self.messages_per_iter) as f64
    }
    /// Baseline nanoseconds per message.
    pub fn baseline_ns(&self) -> f64 {
        self.baseline.as_nanos() as f64 / self.messages()
    }
    /// Candidate nanoseconds per message.
    pub fn candidate_ns(&self) -> f64 {
        self.candidate.as_nanos() as f64 / self.messages()
    }
    /// Candidate throughput over baseline throughput.
    pub fn throughput_ratio(&self) -> f64 {
        self.baseline.as_secs_f64() / self.candidate.as_secs_f64()
    }
}

/// Paired samples by scenario name, kept in the order first recorded.
#[derive(Default)]
pub struct Pairs {
    samples: Mutex<Vec<(String, Vec<Pair>)>>,
}

impl Pairs {
    /// An empty record, usable as a `static`.
    pub const fn new() -> Self {
        Pairs { samples: Mutex::new(Vec::new()) }
    }

    /// Adds a sample of `scenario`.
    pub fn record(&self, scenario: &str, pair: Pair) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match samples.iter_mut().find(|(name, _)| name == scenario) {
            Some((_, pairs)) => pairs.push(pair),
            None => samples.push((scenario.to_owned(), vec![pair])),
        }
    }

    /// Every scenario with its samples, in the order first recorded.
    pub fn scenarios(&self) -> Vec<(String, Vec<Pair>)> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The median of `values` (NaN when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident * page_size())
}

/// The page size, asked of `getconf` once (4 KiB if it cannot tell).
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    })
}
