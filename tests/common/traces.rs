//! A `tracing` layer that keeps the events emitted on the test's thread, with
//! their fields and those of the span they belong to: for tests of what
//! `monitor` logs. Installed per thread, so tests of one binary running in
//! parallel on other threads neither see nor disturb it (a `#[tokio::test]`
//! runs its tasks on the test's thread).

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
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
    /// Captures what this thread emits until the guard is dropped.
    #[must_use = "capturing stops when the guard is dropped"]
    pub fn start() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
        (capture, guard)
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
