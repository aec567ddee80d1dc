//! [`StaticGroup`] and [`ElasticGroup`]: the handles of one group, from
//! [`Natty::static_group`](crate::Natty::static_group) and
//! [`Natty::elastic_group`](crate::Natty::elastic_group). What acts on one group (create it,
//! read or change its configuration, step a member down, serve a member) is a method here.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tower::Service;

use super::admin::check_names;
use super::member::Kind;
use super::{
    ElasticGroupConfig, GroupError, MemberConfig, MemberMapping, MemberSummary, StaticGroupConfig,
};
use crate::connection::Connection;
use crate::consume::Message;
use crate::error::BoxError;

/// The names of one group, checked once.
#[derive(Clone)]
struct Names {
    connection: Arc<Connection>,
    stream: Arc<str>,
    group: Arc<str>,
}

impl Names {
    fn new(connection: &Arc<Connection>, stream: &str, group: &str) -> Result<Self, GroupError> {
        check_names(stream, group)?;
        Ok(Self {
            connection: Arc::clone(connection),
            stream: Arc::from(stream),
            group: Arc::from(group),
        })
    }

    fn fmt(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("stream", &self.stream)
            .field("group", &self.group)
            .finish()
    }
}

/// A static group (orbit's partitioned consumer group with a fixed membership), its names
/// checked once; nothing is sent until a call. Cheap to clone. See the [module docs](super).
#[derive(Clone)]
pub struct StaticGroup(Names);

impl std::fmt::Debug for StaticGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt("StaticGroup", f)
    }
}

impl StaticGroup {
    pub(crate) fn open(
        connection: &Arc<Connection>,
        stream: &str,
        group: &str,
    ) -> Result<Self, GroupError> {
        Names::new(connection, stream, group).map(Self)
    }

    /// The stream the group reads.
    pub fn stream(&self) -> &str {
        &self.0.stream
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.0.group
    }

    /// Create the group, storing `config` where orbit keeps it (the bucket is created, with
    /// the stream's replicas, if missing). Idempotent: an existing group with the same
    /// configuration is fine. Returns the stored configuration.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig` before sending; `StreamNotFound`;
    /// `ConfigDrift` when the group exists with another configuration.
    pub async fn create(
        &self,
        config: &StaticGroupConfig,
    ) -> Result<StaticGroupConfig, GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.create_static_group(stream, group, config).await
    }

    /// The group's configuration.
    ///
    /// # Errors
    /// `NotFound` for an unknown group; `InvalidConfig` when the stored JSON breaks orbit's
    /// rules; `Unsupported` before 2.11.
    pub async fn config(&self) -> Result<StaticGroupConfig, GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.static_group(stream, group).await
    }

    /// The partitions `member` consumes now, ascending.
    ///
    /// # Errors
    /// Those of [`StaticGroup::config`]; `NotMember` when `member` is not in the group.
    pub async fn member_partitions(&self, member: &str) -> Result<Vec<u32>, GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection
            .static_member_partitions(stream, group, member)
            .await
    }

    /// Make the pinned instance of `member` step down: the server unpins it and pins the
    /// next instance that pulls (orbit's `StaticMemberStepDown`). The old instance stops at
    /// its next pull; see the [module docs](super) for how order is kept across the change.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; `StreamNotFound`; server errors (no such
    /// consumer, nobody pinned).
    pub async fn step_down(&self, member: &str) -> Result<(), GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection
            .static_member_step_down(stream, group, member)
            .await
    }

    /// Delete the group: its configuration (members watching it stop), then every consumer
    /// named `<group>-...` on the stream. Deleting a missing group is fine.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `StreamNotFound`; server errors.
    pub async fn delete(&self) -> Result<(), GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.delete_static_group(stream, group).await
    }

    /// Serve `config`'s member with `service` until `shutdown` is cancelled: one call at a
    /// time per partition, partitions concurrently, the partition token stripped from the
    /// subject (and kept as a [`Partition`](super::Partition) extension). See the [module
    /// docs](super) for the guarantees and timers. The future holds its own share of the
    /// handle, so it can be spawned.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`, `StreamNotFound`, `NotFound` (unknown
    /// group), `NotMember` at start; `ConfigDrift` when the member's consumer exists with
    /// other settings or the group's configuration changes while serving; `Deleted` when the
    /// group is deleted; `Service` when the service's `poll_ready` fails. A server that does
    /// not answer for now (a timeout, "no responders" while a cluster moves a leader) is
    /// waited out, at start as while serving, until `shutdown`.
    pub fn serve<S>(
        &self,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<MemberSummary, GroupError>> + Send + 'static
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let config = config.in_group(&self.0.stream, &self.0.group);
        Arc::clone(&self.0.connection).drive_member(Kind::Static, config, shutdown, service)
    }
}

/// An elastic group (orbit's partitioned consumer group whose membership changes at
/// runtime), its names checked once; nothing is sent until a call. Cheap to clone. See the
/// [module docs](super).
#[derive(Clone)]
pub struct ElasticGroup(Names);

impl std::fmt::Debug for ElasticGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt("ElasticGroup", f)
    }
}

impl ElasticGroup {
    pub(crate) fn open(
        connection: &Arc<Connection>,
        stream: &str,
        group: &str,
    ) -> Result<Self, GroupError> {
        Names::new(connection, stream, group).map(Self)
    }

    /// The stream the group reads.
    pub fn stream(&self) -> &str {
        &self.0.stream
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.0.group
    }

    /// Create the group: its configuration where orbit keeps it, and its work-queue stream
    /// sourcing the stream with the partition token inserted, with the original's replicas
    /// and storage. Idempotent for the same partitions, filters and limits (members and
    /// mappings of an existing group are kept). Returns the stored configuration.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; `StreamNotFound`; `ConfigDrift` when the
    /// group exists with other partitions, filters or limits.
    pub async fn create(
        &self,
        config: &ElasticGroupConfig,
    ) -> Result<ElasticGroupConfig, GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.create_elastic_group(stream, group, config).await
    }

    /// The group's configuration.
    ///
    /// # Errors
    /// `NotFound` for an unknown group; `InvalidConfig` for a stored configuration that
    /// breaks orbit's rules; `Unsupported` before 2.11.
    pub async fn config(&self) -> Result<ElasticGroupConfig, GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.elastic_group(stream, group).await
    }

    /// Delete the group: its configuration (members stop) and its stream.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; server errors.
    pub async fn delete(&self) -> Result<(), GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.delete_elastic_group(stream, group).await
    }

    /// Add `members`; returns the members now. Partitions move to them with orbit's (small)
    /// churn; the members serving adjust at once.
    ///
    /// # Errors
    /// `InvalidConfig` when the group uses member mappings; `ConfigDrift` when the
    /// configuration changed in between (compare-and-set lost); those of
    /// [`ElasticGroup::config`].
    pub async fn add_members<I, S>(&self, members: I) -> Result<Vec<String>, GroupError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.add_elastic_members(stream, group, members).await
    }

    /// Drop `members`; returns the members now.
    ///
    /// # Errors
    /// See [`ElasticGroup::add_members`].
    pub async fn drop_members<I, S>(&self, members: I) -> Result<Vec<String>, GroupError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection
            .drop_elastic_members(stream, group, members)
            .await
    }

    /// Replace the membership by `mappings` (every partition exactly once).
    ///
    /// # Errors
    /// `InvalidConfig` for mappings that break orbit's rules; those of
    /// [`ElasticGroup::config`].
    pub async fn set_mappings(
        &self,
        mappings: impl IntoIterator<Item = MemberMapping>,
    ) -> Result<(), GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection
            .set_elastic_mappings(stream, group, mappings)
            .await
    }

    /// Remove the member mappings (leaving the group without members).
    ///
    /// # Errors
    /// Those of [`ElasticGroup::config`].
    pub async fn delete_mappings(&self) -> Result<(), GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection.delete_elastic_mappings(stream, group).await
    }

    /// The partitions `member` consumes now, ascending.
    ///
    /// # Errors
    /// Those of [`ElasticGroup::config`]; `NotMember`.
    pub async fn member_partitions(&self, member: &str) -> Result<Vec<u32>, GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection
            .elastic_member_partitions(stream, group, member)
            .await
    }

    /// Make the pinned instance of `member` step down, as [`StaticGroup::step_down`] does.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; server errors.
    pub async fn step_down(&self, member: &str) -> Result<(), GroupError> {
        let Names {
            connection,
            stream,
            group,
        } = &self.0;
        connection
            .elastic_member_step_down(stream, group, member)
            .await
    }

    /// Serve `config`'s member with `service` until `shutdown` is cancelled, as
    /// [`StaticGroup::serve`] does, following membership changes: when the member's
    /// partitions change, the pinned instance finishes its calls (within the shutdown grace),
    /// returns what it holds in order and deletes its consumer, and every instance joins again
    /// with the new partitions once their previous owners let go. A member not (yet) in the
    /// group waits to be added. Like [`StaticGroup::serve`]'s, the future can be spawned.
    ///
    /// # Errors
    /// As [`StaticGroup::serve`]; `ConfigDrift` when the partitions, filters or buffered
    /// limits change.
    pub fn serve<S>(
        &self,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<MemberSummary, GroupError>> + Send + 'static
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let config = config.in_group(&self.0.stream, &self.0.group);
        Arc::clone(&self.0.connection).drive_member(Kind::Elastic, config, shutdown, service)
    }
}
