//! Creating a member's consumer and its pull: joining an elastic group while its partitions
//! are still another member's, and (re)opening a static or joined member's consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::config::{Kind, MemberConfig, Timers};
use super::spec::{Follow, Spec};
use crate::error::Error;
use crate::group::config::PRIORITY_GROUP;
use crate::group::error::{refused, GroupError, GroupErrorKind};

/// How joining an elastic group ended.
pub(super) enum Join {
    Joined(Box<(PullConsumer, pull::Stream)>),
    /// The member owns no partitions (now).
    Idle,
    Shutdown,
    Stop(GroupError),
}

/// What joining an elastic group needs.
pub(super) struct Joining<'a> {
    pub(super) stream: &'a async_nats::jetstream::stream::Stream,
    pub(super) store: &'a async_nats::jetstream::kv::Store,
    pub(super) key: &'a str,
    pub(super) config: &'a MemberConfig,
    pub(super) timers: &'a Timers,
    pub(super) shutdown: &'a CancellationToken,
}

impl Joining<'_> {
    /// Create the member's consumer on the elastic group's stream, retrying while its
    /// partitions are still another member's (the server refuses overlapping filters on a
    /// work queue) and following configuration changes meanwhile. A consumer of this member
    /// left with other filters is deleted once no instance holds its pin (none is draining
    /// it), as orbit's members delete it.
    pub(super) async fn join(
        &self,
        spec: &mut Spec,
        watch: &mut Option<async_nats::jetstream::kv::Watch>,
    ) -> Join {
        use async_nats::jetstream::stream::ConsumerCreateStrictErrorKind;
        let member = &self.config.member;
        loop {
            let filters = spec.member_filters(member);
            if filters.is_empty() {
                return Join::Idle;
            }
            let consumer_config = self.config.consumer_config(Kind::Elastic, filters);
            match self.stream.create_consumer_strict(consumer_config).await {
                Ok(consumer) => match open_pull(&consumer, self.config, self.timers).await {
                    Ok(messages) => return Join::Joined(Box::new((consumer, messages))),
                    Err(err) => tracing::debug!(target: "natty", error = %err, "pull not open yet"),
                },
                Err(err) if err.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {
                    if self.unpinned_leftover(member).await {
                        let _ = self.stream.delete_consumer(member).await;
                        continue;
                    }
                }
                Err(err) => {
                    tracing::debug!(target: "natty", member = %member, error = %err, "partitions not free yet")
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Join::Shutdown,
                update = next_update(watch) => match update {
                    Some(Ok(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                        match spec.follow(Kind::Elastic, &entry.value, member) {
                            Follow::Same => {}
                            Follow::Rejoin(next) => *spec = next,
                            Follow::Drift => return Join::Stop(refused(GroupErrorKind::ConfigDrift, "group", self.key, "changed while serving")),
                        }
                    }
                    Some(Ok(_)) => return Join::Stop(refused(GroupErrorKind::Deleted, "group", self.key, "was deleted while serving")),
                    Some(Err(_)) | None => *watch = self.store.watch(self.key).await.ok(),
                },
                () = tokio::time::sleep(Duration::from_millis(250 + fastrand_ms() / 2)) => {}
            }
        }
    }

    /// Whether this member's existing consumer has no pinned instance.
    async fn unpinned_leftover(&self, member: &str) -> bool {
        match self.stream.consumer_info(member).await {
            Ok(info) => !info
                .priority_groups
                .iter()
                .any(|g| g.group == PRIORITY_GROUP && g.pinned_client_id.is_some()),
            Err(_) => false,
        }
    }
}

/// 0-99 ms of jitter, so instances reacting to one change do not move in lockstep.
pub(super) fn fastrand_ms() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
            % 100,
    )
}

pub(super) async fn create_member_consumer(
    stream: &async_nats::jetstream::stream::Stream,
    config: pull::Config,
) -> Result<PullConsumer, GroupError> {
    use async_nats::jetstream::stream::ConsumerCreateStrictErrorKind;
    match stream.create_consumer_strict(config).await {
        Ok(consumer) => Ok(consumer),
        // The consumer exists with other settings: another instance runs another ack wait,
        // or the group changed while this member was down.
        Err(err) if err.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {
            Err(Error::with_source(GroupErrorKind::ConfigDrift, err))
        }
        Err(err) => Err(crate::group::admin::js(err)),
    }
}

pub(super) async fn open_pull(
    consumer: &PullConsumer,
    config: &MemberConfig,
    timers: &Timers,
) -> Result<pull::Stream, GroupError> {
    consumer
        .stream()
        .group(PRIORITY_GROUP)
        .max_messages_per_batch(config.batch)
        .expires(timers.pull_expiry)
        .heartbeat(timers.pull_expiry / 2)
        .messages()
        .await
        .map_err(|e| Error::with_source(GroupErrorKind::JetStream, e))
}

/// Recreate the member's consumer (idempotent) and a pull stream on it; on failure both are
/// `None` and the driver tries again when the stream is next polled.
pub(super) async fn reopen(
    stream: &async_nats::jetstream::stream::Stream,
    config: &MemberConfig,
    kind: Kind,
    spec: &Spec,
    timers: &Timers,
) -> (Option<PullConsumer>, Option<pull::Stream>) {
    let filters = spec.member_filters(&config.member);
    if filters.is_empty() {
        return (None, None);
    }
    match create_member_consumer(stream, config.consumer_config(kind, filters)).await {
        Ok(consumer) => match open_pull(&consumer, config, timers).await {
            Ok(messages) => (Some(consumer), Some(messages)),
            Err(err) => {
                tracing::debug!(target: "natty", error = %err, "pull not open yet");
                (Some(consumer), None)
            }
        },
        Err(err) => {
            tracing::debug!(target: "natty", error = %err, "member consumer not reachable yet");
            (None, None)
        }
    }
}

pub(super) async fn next_update(
    watch: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, async_nats::jetstream::kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => None,
    }
}
