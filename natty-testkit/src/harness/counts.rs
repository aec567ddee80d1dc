//! What the server counts for a stream and a consumer, as plain numbers.

use natty::async_nats::jetstream::{consumer, stream};

/// A stream's counts, from [`Harness::stream_counts`](crate::Harness::stream_counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamCounts {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The sequence of the first message stored (0 when empty).
    pub first_sequence: u64,
    /// The sequence of the last message stored.
    pub last_sequence: u64,
    /// Distinct subjects among the messages stored.
    pub subjects: u64,
    /// Consumers of the stream.
    pub consumers: u64,
}

impl StreamCounts {
    pub(super) fn of(state: &stream::State) -> Self {
        Self {
            messages: state.messages,
            bytes: state.bytes,
            first_sequence: state.first_sequence,
            last_sequence: state.last_sequence,
            subjects: state.subjects_count,
            consumers: state.consumer_count as u64,
        }
    }
}

/// A durable consumer's counts, from
/// [`Harness::consumer_counts`](crate::Harness::consumer_counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerCounts {
    /// Messages not delivered yet.
    pub pending: u64,
    /// Messages delivered and neither acked nor terminated yet.
    pub ack_pending: u64,
    /// Messages delivered more than once and not settled for good yet.
    pub redelivered: u64,
    /// Pull requests waiting for messages.
    pub waiting: u64,
    /// The stream sequence of the last message delivered.
    pub delivered_sequence: u64,
    /// The stream sequence up to which every message is acked (the ack floor).
    pub acked_sequence: u64,
}

impl ConsumerCounts {
    pub(super) fn of(info: &consumer::Info) -> Self {
        Self {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
            delivered_sequence: info.delivered.stream_sequence,
            acked_sequence: info.ack_floor.stream_sequence,
        }
    }
}
