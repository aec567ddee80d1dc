//! Partitioned consumer groups: order per key, spread over instances, compatible with orbit.
//!
//! A *static group* splits a stream into `n` partitions: the stream stores every message
//! under `<partition>.<subject>` (a `partition(n, ...)` subject transform, see
//! [`Stream::create_partitioned`](crate::Stream::create_partitioned)), so all messages of one key share a partition. Each
//! *member* owns some partitions and consumes them through its own durable consumer
//! `<group>-<member>`, filtered on its partitions, with the pinned-client priority policy of
//! nats-server 2.11 (ADR-42) in the priority group `PCG`. Several *instances* of one member
//! may run: the server pins one and the others stand by.
//!
//! An *elastic group* works on any stream: natty creates a work-queue stream
//! `<stream>-<group>` that sources the original through a partitioning transform (chosen `*`
//! wildcards of each filter, or the whole subject) with settable buffered limits, and members
//! are added, dropped or mapped at runtime ([`ElasticGroup::add_members`],
//! [`ElasticGroup::drop_members`], [`ElasticGroup::set_mappings`]). A member whose
//! partitions change drains (its pinned instance finishes its calls, returns what it holds in
//! order and deletes its consumer) before the partitions' new owners can take them: the
//! server refuses overlapping consumers on a work queue, so two members never hold one
//! partition. See [`ElasticGroup::serve`].
//!
//! natty writes no protocol of its own here, so the group is orbit.go's `pcgroups` (also
//! `natsio-pcgroups` for Python): the configuration lives in the `static-consumer-groups`
//! bucket (`elastic-consumer-groups` for elastic ones) under `<stream>.<group>` in orbit's
//! JSON, members get orbit's partitions, consumers orbit's names, settings and priority group. A natty member and an orbit member serve one
//! group side by side. Orbit's one quirk is kept: with member mappings the filters are not
//! applied.
//!
//! # Serving
//! [`StaticGroup::serve`] (from [`Natty::static_group`](crate::Natty::static_group)) feeds a tower `Service<Message>` (any natty-tower stack):
//! one call at a time per partition, partitions concurrently, the partition token stripped
//! from the subject (it is in the [`Partition`] extension). The per-message rules are those of
//! [`Natty::serve`](crate::Natty::serve), from the same engine: readiness, a panic caught in `call` or in its future,
//! a message the service leaves unsettled acked after `Ok` and nak'd after `Err` or a panic,
//! each failure logged and sent to [`MemberConfig::failures`] if set. A partition's next call
//! starts as soon as the previous one has ended and its settlement has been *sent*, not
//! confirmed by the server: an ack lost with a dying connection makes the server redeliver
//! that message after its ack wait, by which time later messages of its key may have been
//! handled. That is a replay of a message already handled (delivery is at least once), never
//! a message handled for the first time after a later one. Measured with one instance serving 8
//! partitions and a 1 ms handler, the lanes are busy 98 % of the time (natty-bench's
//! `groups-efficiency`, 0.983; a median 15 µs between a lane's calls). A message that will come
//! back (nak'd by the driver or a layer, or dropped unsettled) *fences* its partition: later
//! messages of the partition wait, held, until it is handled again, or until its nak delay
//! plus `A + pull expiry` pass without it (it was termed, or ran out of deliveries). So a
//! later message of a key does not overtake an earlier one that is still to be handled, as
//! long as the earlier one comes back within that time. A delivery lost with a dying server
//! shows as a jump in the consumer's delivery sequence: the instance then starts no call until
//! the consumer's pending messages are all ones it holds (the lost one redelivered), bounded by
//! the takeover wait below. Delivery is at least once: acks lost with a dying server make the
//! next pinned instance handle those messages again, in order.
//!
//! # Timers and failover (ack wait `A`, default 5 s)
//! | timer | value | with `A` = 5 s |
//! |---|---|---|
//! | pinned TTL (orbit's) | `max(A, 1 s)` | 5 s |
//! | pull expiry (orbit's) | `max(A / 2, 1 s)` | 2.5 s |
//! | stall threshold | `max(A / 10, 250 ms)` | 500 ms |
//! | handler budget after arrival | `A - max(A / 5, 2 stall + 100 ms)` | 4 s |
//! | takeover wait, at most | `A + pull expiry + 1 s` | 8.5 s |
//!
//! When the pinned instance dies or is paused, the server pins a standby once the pinned TTL
//! passed without a pull from it: new messages flow again after at most pinned TTL + pull
//! expiry (7.5 s at `A` = 5 s). The new pin first waits until the consumer's pending acks are
//! all its own (the old pin's messages were acked or redelivered to it, at most `A` after
//! their delivery), bounded by the takeover wait; then it handles them in stream order. So a
//! partition is served again within pinned TTL + pull expiry + `A` + 1 s (13.5 s at 5 s).
//!
//! An instance never polls a handler for a message past its handler budget, nor after its
//! process stalled (a SIGSTOP, a frozen VM, a starved runtime: ticks further apart than the
//! stall threshold); after a stall it drops what it holds and checks with the server whether
//! it still holds the pin, dropping every message of a lost pin. So a paused instance that
//! resumes does not run a key's handler while its successor handles that key. A call that is
//! *inside* a synchronous step when the process stops finishes that step on resume; the
//! guarantee is about polls. Handlers must therefore finish within the budget: a handler's
//! `in_progress` does not extend it.
//!
//! # Example
//! ```no_run
//! use natty::group::{MemberConfig, Partitioning, StaticGroupConfig};
//! use natty::{CancellationToken, Message};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! // Stored as `<partition>.orders.<customer>`, partitioned by the customer.
//! natty
//!     .stream("ORDERS")?
//!     .create_partitioned(&Partitioning::new("orders.*", 6))
//!     .await?;
//! let billing = natty.static_group("ORDERS", "billing")?;
//! billing
//!     .create(&StaticGroupConfig::with_members(6, ["m1", "m2", "m3"]))
//!     .await?;
//!
//! let shutdown = CancellationToken::new();
//! let summary = billing
//!     .serve(
//!         MemberConfig::new("m1"),
//!         shutdown.clone(),
//!         tower::service_fn(|msg: Message| async move {
//!             println!("{}: {:?}", msg.subject(), msg.payload()); // "orders.<customer>"
//!             Ok::<_, std::io::Error>(())
//!         }),
//!     )
//!     .await?;
//! println!("handled {}", summary.handled);
//! # Ok(())
//! # }
//! ```

mod admin;
mod config;
mod elastic;
mod error;
mod handle;
mod member;
mod partition;

pub use admin::Partitioning;
pub use config::{
    config_key, consumer_name, MemberMapping, StaticGroupConfig, PRIORITY_GROUP, STATIC_BUCKET,
};
pub use elastic::{elastic_stream_name, ElasticGroupConfig, PartitioningFilter, ELASTIC_BUCKET};
pub use error::{GroupError, GroupErrorKind};
pub use handle::{ElasticGroup, StaticGroup};
pub use member::{MemberConfig, MemberSummary, Partition, Timers};
