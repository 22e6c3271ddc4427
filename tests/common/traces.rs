//! A `tracing` layer that keeps the events emitted in the test binary, with
//! their fields and those of the span they belong to: for tests of what
//! `monitor` logs. It is the binary's global subscriber (a subscriber set
//! per thread lost spans to other threads' callsite registrations when the
//! tests ran in parallel); each test reads the events of its own method.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, OnceLock},
};

use tracing::{
    field::{Field, Visit},
    span, Level, Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

/// Field values as text: numbers and strings as they are, other values as
/// their `Debug` form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(pub BTreeMap<String, String>);

impl Fields {
    /// The value of `name`, if the event or span has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// One event as captured.
#[derive(Clone, Debug)]
pub struct Captured {
    pub level: Level,
    /// Its fields, the message under `message`.
    pub fields: Fields,
    /// The name of the span it belongs to, and that span's fields.
    pub span: Option<(&'static str, Fields)>,
}

impl Captured {
    /// The event's message.
    pub fn message(&self) -> &str {
        self.fields.get("message").unwrap_or_default()
    }

    /// A field of the span it belongs to.
    pub fn span_field(&self, name: &str) -> Option<&str> {
        self.span.as_ref().and_then(|(_, fields)| fields.get(name))
    }
}

/// The capturing layer; see the [module docs](self).
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    /// What the test binary emits from now on, on any thread: the capture is
    /// the process's global subscriber, installed on the first call (so that
    /// no callsite's interest is decided by a thread without it), and a test
    /// reads its own calls by their method (`of`).
    pub fn start() -> Capture {
        static GLOBAL: OnceLock<Capture> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let capture = Capture::default();
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
                    .expect("no other global subscriber in a test binary that captures");
                capture
            })
            .clone()
    }

    /// The events at `level` in the spans of calls of `method` (`/test.X/Method`).
    pub fn of(&self, method: &str, level: Level) -> Vec<Captured> {
        let events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().filter(|e| e.level == level && e.span_field("rpc.method") == Some(method)).cloned().collect()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let span = ctx.event_span(event).map(|span| {
            let span_fields = span.extensions().get::<Fields>().cloned().unwrap_or_default();
            (span.name(), span_fields)
        });
        let captured = Captured { level: *event.metadata().level(), fields, span };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(captured);
    }
}
