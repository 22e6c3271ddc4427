// Every hook has a default, so the state types must implement `Default`
// (the default `on_start` makes the call's), even where `on_start` is written.
use interceptor_runtime::{CallContext, Interceptor};
use tonic::{metadata::MetadataMap, Status};

struct Started {
    at: std::time::Instant,
}

struct Timing;

impl Interceptor for Timing {
    type Call = Started;
    type Stream = ();
    fn on_start(&self, _: &CallContext, _: &MetadataMap) -> Result<Started, Status> {
        Ok(Started { at: std::time::Instant::now() })
    }
}

fn main() {}
