//! What a call counts: each direction's messages and bytes.

use super::sync::{AtomicU64, Ordering::Relaxed};

/// Message and byte counts of one call so far (bytes are
/// `prost::Message::encoded_len`, without gRPC framing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Messages that reached the handler.
    pub messages_received: u64,
    /// Their encoded bytes.
    pub bytes_received: u64,
    /// Messages that went to the client: handed to tonic's encoder (one it
    /// then refuses, over `max_encoding_message_size`, counts too).
    pub messages_sent: u64,
    /// Their encoded bytes.
    pub bytes_sent: u64,
}

/// The two counters of one direction. Each direction has a single writer.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Counters {
    /// Counts one message, given the counts before it. Each direction has a
    /// single writer (its `Inbound` or `Outbound`, polled through `&mut`, or
    /// the one unary message), which read them: so plain stores suffice, no
    /// locked read-modify-write per message.
    #[inline]
    pub(crate) fn record(&self, messages_before: u64, bytes_before: u64, bytes: usize) {
        self.bytes.store(bytes_before + bytes as u64, Relaxed);
        self.messages.store(messages_before + 1, Relaxed);
    }
}
