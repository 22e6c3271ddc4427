//! Option values written as expressions: a `const`, a `static` read from
//! configuration at start-up, an environment-derived `LazyLock`, and values of
//! the service instance (`rate = self.limits.chat`, `with = self.auth.clone()`).
//! The handlers are called in-process with the test kit (time-dependent ones
//! under tokio's paused clock).
//!
//! Values that mention `self` are evaluated on every call: two instances of
//! one service type configured differently enforce their own limits, and
//! calls with equal values share the method's state (here `streams` slots).
//! A bad value ends the call with INTERNAL and is logged at ERROR once per
//! method.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex, OnceLock},
    time::Duration,
};

use interceptor_runtime::{
    intercept,
    testing::{collect, probe, streaming_request, MockStream},
    CallContext, Direction, Interceptor,
};
use tokio::time::Instant;
use tonic::{metadata::MetadataMap, Code, Request, Response, Status, Streaming};
use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, Layer};

mod pb {
    tonic::include_proto!("echo");
}

use pb::{echo_server::Echo, EchoRequest, EchoResponse};

/// At most this many replies per stream.
const MAX_REPLIES: u64 = 3;

/// Read once, when the program starts (`load_config`).
struct Config {
    max_reply_bytes: String,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config { max_reply_bytes: "40B".into() })
}

/// From the environment, on first use: a duration as text, parsed by the
/// runtime.
static IDLE: LazyLock<String> = LazyLock::new(|| std::env::var("ICPT_TEST_IDLE").unwrap_or_else(|_| "1h".into()));

/// The environment the service is deployed with; every test sets it first
/// (once for all: the tests run on several threads).
fn environment() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| std::env::set_var("ICPT_TEST_IDLE", "3s"));
}

#[derive(Clone, Copy)]
struct Limits {
    chat: u64,
    streams: u64,
}

/// Accepts calls whose `token` metadata is its own.
#[derive(Clone, Debug, PartialEq)]
struct TokenCheck {
    token: String,
}

impl Interceptor for TokenCheck {
    type Call = ();
    type Stream = ();
    fn name(&self) -> &'static str {
        "token_check"
    }
    fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        match metadata.get("token") {
            Some(token) if token == self.token.as_str() => Ok(()),
            _ => Err(Status::unauthenticated("not this instance's token")),
        }
    }
    fn on_stream(&self, _: &(), _: &CallContext, _: Direction) {}
}

/// One service type; each instance has its own limits and token.
struct Configured {
    limits: Limits,
    auth: TokenCheck,
}

impl Configured {
    fn new(chat: u64, streams: u64, token: &str) -> Self {
        Configured { limits: Limits { chat, streams }, auth: TokenCheck { token: token.into() } }
    }
}

fn reply(message: impl Into<String>) -> EchoResponse {
    EchoResponse { message: message.into() }
}

#[intercept(monitor, service = "test.Configured")]
#[tonic::async_trait]
impl Echo for Configured {
    #[intercept(with = self.auth.clone())]
    async fn unary_echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(reply(request.into_inner().message)))
    }

    type ServerStreamingEchoStream = tokio_stream::Iter<std::vec::IntoIter<Result<EchoResponse, Status>>>;

    /// Replies with each word of the request, three times over.
    #[intercept(budget(messages = MAX_REPLIES, bytes = config().max_reply_bytes.as_str()))]
    async fn server_streaming_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamingEchoStream>, Status> {
        let words: Vec<_> = request.into_inner().message.split(' ').map(|w| Ok(reply(w.repeat(3)))).collect();
        Ok(Response::new(tokio_stream::iter(words)))
    }

    #[intercept(rate(recv = self.limits.chat), budget(idle = IDLE.as_str()))]
    async fn client_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut stream = request.into_inner();
        let mut count = 0;
        while stream.message().await?.is_some() {
            count += 1;
        }
        Ok(Response::new(reply(count.to_string())))
    }

    type BidirectionalStreamingEchoStream = tokio_stream::Pending<Result<EchoResponse, Status>>;

    /// Holds the call open until the client goes away.
    #[intercept(budget(streams = self.limits.streams))]
    async fn bidirectional_streaming_echo(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidirectionalStreamingEchoStream>, Status> {
        Ok(Response::new(tokio_stream::pending()))
    }
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest { message: message.into() }
}

#[tokio::test]
async fn a_const_and_a_static_read_at_start_up() {
    environment();
    let service = Configured::new(10, 10, "t");
    let replies = collect(service.server_streaming_echo(Request::new(echo("a b c d e"))).await).await;
    let texts: Vec<_> = replies.messages.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(texts, ["aaa", "bbb", "ccc"]);
    assert_eq!(replies.status.unwrap().message(), "budget: 3 messages per stream used up (send)");

    // "40B" from the configuration: the second 32-byte reply is over it.
    let replies = collect(service.server_streaming_echo(Request::new(echo("abcdefghij klmnopqrst"))).await).await;
    let texts: Vec<_> = replies.messages.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(texts, ["abcdefghij".repeat(3)]);
    assert_eq!(replies.status.unwrap().message(), "budget: 40 bytes per stream used up (send)");
}

/// Each instance's `rate = self.limits.chat`: 5 uploads take 4 intervals.
#[tokio::test(start_paused = true)]
async fn two_instances_configured_at_run_time_enforce_their_own_rates() {
    environment();
    async fn upload_five(service: &Configured) -> Duration {
        let start = Instant::now();
        let request = streaming_request((0..5).map(|i| echo(&i.to_string())));
        let counted = service.client_streaming_echo(request).await.expect("passes").into_inner();
        assert_eq!(counted.message, "5");
        start.elapsed()
    }
    let (fast, slow) = (Configured::new(10, 10, "a"), Configured::new(2, 10, "b"));
    let within = Duration::from_secs(60);
    let fast_took = tokio::time::timeout(within, upload_five(&fast)).await.expect("in time");
    let slow_took = tokio::time::timeout(within, upload_five(&slow)).await.expect("in time");
    assert!(fast_took >= Duration::from_millis(400) && fast_took < Duration::from_millis(900), "{fast_took:?}");
    assert!(slow_took >= Duration::from_millis(2000) && slow_took < Duration::from_millis(2500), "{slow_took:?}");
    // And again: each keeps its own, whichever was called first.
    let fast_again = tokio::time::timeout(within, upload_five(&fast)).await.expect("in time");
    assert!(fast_again < Duration::from_millis(900), "{fast_again:?}");
}

#[tokio::test]
async fn each_instance_checks_its_own_token() {
    environment();
    let (a, b) = (Configured::new(10, 10, "a"), Configured::new(10, 10, "b"));
    let with_token = |token: &str| {
        let mut request = Request::new(echo("hi"));
        request.metadata_mut().insert("token", token.parse().unwrap());
        request
    };
    assert_eq!(a.unary_echo(with_token("a")).await.unwrap().into_inner().message, "hi");
    assert_eq!(b.unary_echo(with_token("a")).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(b.unary_echo(with_token("b")).await.unwrap().into_inner().message, "hi");
    assert_eq!(a.unary_echo(with_token("b")).await.unwrap_err().code(), Code::Unauthenticated);
}

/// `streams = self.limits.streams`: instances whose values are equal share
/// the method's slots; another value has its own.
#[tokio::test]
async fn calls_with_equal_values_share_the_method_state() {
    environment();
    let (one, also_one, two) = (Configured::new(10, 1, "a"), Configured::new(10, 1, "b"), Configured::new(10, 2, "c"));
    async fn open(
        service: &Configured,
    ) -> Result<Response<interceptor_runtime::Outbound<tokio_stream::Pending<Result<EchoResponse, Status>>>>, Status>
    {
        service.bidirectional_streaming_echo(streaming_request([])).await
    }
    let held = open(&one).await.expect("the first call of streams = 1");
    let refused = open(&also_one).await.expect_err("equal values share the one slot");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("all 1 concurrent streams"), "{}", refused.message());
    let other = open(&two).await.expect("streams = 2 has slots of its own");
    drop((held, other));
    let again = open(&also_one).await.expect("the slot was given back");
    drop(again);
}

/// The idle limit from the environment (`ICPT_TEST_IDLE=3s`), read on first
/// use.
#[tokio::test(start_paused = true)]
async fn a_value_from_the_environment() {
    environment();
    let client = MockStream::new();
    client.add_message(echo("one")).add_delay(Duration::from_secs(5)).add_message(echo("two"));
    let mut request = client.request();
    let call = probe(&mut request);
    let service = Configured::new(1000, 10, "a");
    let status = tokio::time::timeout(Duration::from_secs(60), service.client_streaming_echo(request))
        .await
        .expect("in time")
        .expect_err("idle for 5 s, over the 3 s from the environment");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let took = call.outcome().unwrap().duration;
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(4), "{took:?}");
}

// ---------------------------------------------------------------------------
// Bad values

const NOT_A_DURATION: &str = "soon";

/// A service whose options are wrong at run time.
struct Misconfigured {
    chat: i64,
}

#[intercept(service = "test.Misconfigured")]
#[tonic::async_trait]
impl Echo for Misconfigured {
    #[intercept(rate = self.chat)]
    async fn unary_echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(reply(request.into_inner().message)))
    }

    type ServerStreamingEchoStream = tokio_stream::Empty<Result<EchoResponse, Status>>;

    #[intercept(budget(duration = NOT_A_DURATION))]
    async fn server_streaming_echo(
        &self,
        _: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamingEchoStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }

    async fn client_streaming_echo(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented(""))
    }

    type BidirectionalStreamingEchoStream = tokio_stream::Empty<Result<EchoResponse, Status>>;

    async fn bidirectional_streaming_echo(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidirectionalStreamingEchoStream>, Status> {
        Err(Status::unimplemented(""))
    }
}

/// ERROR events logged by the runtime, by the method they name.
static ERRORS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

struct CountErrors;

impl<S: Subscriber> Layer<S> for CountErrors {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR || !event.metadata().target().starts_with("interceptor_runtime") {
            return;
        }
        struct Method(String);
        impl Visit for Method {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "method" {
                    self.0 = value.to_owned();
                }
            }
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        }
        let mut method = Method(String::new());
        event.record(&mut method);
        *ERRORS.lock().unwrap().get_or_insert_with(HashMap::new).entry(method.0).or_default() += 1;
    }
}

fn errors_logged(method: &str) -> usize {
    ERRORS.lock().unwrap().as_ref().and_then(|m| m.get(method).copied()).unwrap_or(0)
}

#[tokio::test]
async fn a_bad_value_ends_the_call_with_internal_and_is_logged_once() {
    environment();
    let _ = tracing_subscriber::registry().with(CountErrors).try_init();
    for service in [Misconfigured { chat: 0 }, Misconfigured { chat: -5 }] {
        for _ in 0..3 {
            let status = service.unary_echo(Request::new(echo("hi"))).await.expect_err("a bad rate");
            assert_eq!(status.code(), Code::Internal);
            assert!(status.message().starts_with("/test.Misconfigured/UnaryEcho: the `#[intercept]` option `rate`"));
            let why = if service.chat == 0 { "0 would stop every call" } else { "-5 is negative" };
            assert!(status.message().contains(why), "{}", status.message());
        }
    }
    assert_eq!(errors_logged("/test.Misconfigured/UnaryEcho"), 1, "logged once for the method");

    for _ in 0..3 {
        let replies = collect(Misconfigured { chat: 1 }.server_streaming_echo(Request::new(echo("hi"))).await).await;
        let status = replies.status.expect("a bad duration");
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("`budget(duration)` is invalid: `soon` is not a duration"), "{status:?}");
    }
    assert_eq!(errors_logged("/test.Misconfigured/ServerStreamingEcho"), 1, "logged once for the method");
}

/// A good value for the same method works.
#[tokio::test]
async fn a_good_value_of_the_same_method_still_works() {
    environment();
    let answered = Misconfigured { chat: 7 }.unary_echo(Request::new(echo("fine"))).await.expect("a good rate");
    assert_eq!(answered.into_inner().message, "fine");
}
