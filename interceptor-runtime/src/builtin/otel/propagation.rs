//! The trace context a client sent, read from the request's metadata.

use opentelemetry::{
    global,
    propagation::{Extractor, TextMapPropagator},
    Context,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataMap};

/// A request's metadata as the propagators read it: its ASCII entries.
struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        let ascii = self.0.keys().filter_map(|key| match key {
            KeyRef::Ascii(key) => Some(key.as_str()),
            KeyRef::Binary(_) => None,
        });
        ascii.collect()
    }
}

/// The context the server span is a child of: what the global propagator
/// reads from `metadata`, or, when none was set (the API's default reads no
/// header at all), the W3C trace context (`traceparent`, `tracestate`).
/// Empty when the request carries none: the span starts a trace.
pub(super) fn parent_context(metadata: &MetadataMap) -> Context {
    let carrier = Metadata(metadata);
    // Not `Context::current()`: whatever a thread has attached is no part of
    // this request.
    let empty = Context::new();
    global::get_text_map_propagator(|propagator| {
        if propagator.fields().next().is_some() {
            propagator.extract_with_context(&empty, &carrier)
        } else {
            TraceContextPropagator::new().extract_with_context(&empty, &carrier)
        }
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    #[test]
    fn a_traceparent_in_the_metadata_is_the_parent() {
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        metadata.insert_bin("trace-bin", tonic::metadata::MetadataValue::from_bytes(b"\0"));
        let parent = parent_context(&metadata);
        let span = parent.span();
        let remote = span.span_context();
        assert!(remote.is_remote() && remote.is_sampled());
        assert_eq!(remote.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(remote.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(Metadata(&metadata).keys(), ["traceparent"]);
    }

    #[test]
    fn without_one_there_is_no_parent() {
        let mut metadata = MetadataMap::new();
        assert!(!parent_context(&metadata).has_active_span());
        metadata.insert("traceparent", "not a trace context".parse().unwrap());
        assert!(!parent_context(&metadata).has_active_span());
    }
}
