//! Elastic groups: any stream, re-partitioned into a work-queue stream the group owns, with
//! members added and dropped at runtime. Stored as orbit.go's `pcgroups` stores them.
//!
//! The group's stream `<stream>-<group>` sources the original stream through a subject
//! transform that puts the partition first (from chosen `*` wildcards of each filter, or the
//! whole subject), keeps each message until a member acks it (work-queue retention), and
//! refuses new messages once the buffered limits are reached (discard new) until members catch
//! up. Member `m` consumes through the consumer `m` on that stream. Orbit's config sits in the
//! `elastic-consumer-groups` bucket under `<stream>.<group>`.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{
    self, DiscardPolicy, RetentionPolicy, Source, SubjectTransform,
};
use async_nats::jetstream::ErrorCode;
use serde::{Deserialize, Deserializer, Serialize};

use super::admin::js;
use super::config::{config_key, MemberMapping, StaticGroupConfig};
use super::error::{invalid, not_member, refused, GroupError, GroupErrorKind};
use crate::connection::Connection;
use crate::error::Error;

/// The key/value bucket orbit keeps elastic groups' configurations in.
pub const ELASTIC_BUCKET: &str = "elastic-consumer-groups";

/// The work-queue stream an elastic group consumes from: `<stream>-<group>`.
pub fn elastic_stream_name(stream: &str, group: &str) -> String {
    format!("{stream}-{group}")
}

/// Go writes an empty list as `null`.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Subjects of the original stream the group takes, and which of their `*` wildcards pick
/// the partition (1-based; none: all of the subject).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitioningFilter {
    filter: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    partitioning_wildcards: Vec<u32>,
}

impl PartitioningFilter {
    /// Take `filter`, partitioned by `wildcards` (1-based indexes of its `*` tokens).
    pub fn new(filter: impl Into<String>, wildcards: impl IntoIterator<Item = u32>) -> Self {
        Self {
            filter: filter.into(),
            partitioning_wildcards: wildcards.into_iter().collect(),
        }
    }

    /// The transform destination orbit uses, character for character.
    fn destination(&self, partitions: u32) -> String {
        let mut n = 0;
        let tokens: Vec<String> = self
            .filter
            .split('.')
            .map(|token| {
                if token == "*" {
                    n += 1;
                    format!("{{{{Wildcard({n})}}}}")
                } else {
                    token.to_owned()
                }
            })
            .collect();
        let rest = tokens.join(".");
        if self.partitioning_wildcards.is_empty() {
            format!("{{{{Partition({partitions})}}}}.{rest}")
        } else {
            let by: Vec<String> = self
                .partitioning_wildcards
                .iter()
                .map(u32::to_string)
                .collect();
            format!("{{{{Partition({partitions},{})}}}}.{rest}", by.join(","))
        }
    }
}

/// An elastic group: `partitions` partitions over members that come and go.
///
/// # Example
/// ```
/// use natty::group::{ElasticGroupConfig, PartitioningFilter};
///
/// let config = ElasticGroupConfig::new(4, [PartitioningFilter::new("orders.*.*", [1])])
///     .max_buffered_messages(10_000)
///     .members(["a", "b"]);
/// assert_eq!(config.partitions_of("b"), vec![2, 3]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElasticGroupConfig {
    max_members: u32,
    #[serde(default, deserialize_with = "null_as_empty")]
    partitioning_filters: Vec<PartitioningFilter>,
    #[serde(rename = "max_buffered_msg", default, skip_serializing_if = "is_zero")]
    max_buffered_messages: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    max_buffered_bytes: i64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    members: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    member_mappings: Vec<MemberMapping>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl ElasticGroupConfig {
    /// `partitions` partitions of the subjects `filters` take (all subjects when empty), no
    /// members yet.
    pub fn new(partitions: u32, filters: impl IntoIterator<Item = PartitioningFilter>) -> Self {
        Self {
            max_members: partitions,
            partitioning_filters: filters.into_iter().collect(),
            max_buffered_messages: 0,
            max_buffered_bytes: 0,
            members: Vec::new(),
            member_mappings: Vec::new(),
        }
    }

    /// Buffer at most this many messages in the group's stream (default unlimited).
    pub fn max_buffered_messages(mut self, messages: i64) -> Self {
        self.max_buffered_messages = messages;
        self
    }

    /// Buffer at most this many bytes in the group's stream (default unlimited).
    pub fn max_buffered_bytes(mut self, bytes: i64) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Start with these members.
    pub fn members<I, S>(mut self, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.members = members.into_iter().map(Into::into).collect();
        self
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.max_members
    }

    /// The current members (by list).
    pub fn member_names(&self) -> &[String] {
        &self.members
    }

    /// The current member mappings.
    pub fn member_mappings(&self) -> &[MemberMapping] {
        &self.member_mappings
    }

    /// Whether `member` belongs to the group now.
    pub fn is_member(&self, member: &str) -> bool {
        self.as_static().is_member(member)
    }

    /// The partitions `member` owns now, ascending.
    pub fn partitions_of(&self, member: &str) -> Vec<u32> {
        self.as_static().partitions_of(member)
    }

    /// The filter subjects of `member`'s consumer, as orbit computes them.
    pub fn member_filters(&self, member: &str) -> Vec<String> {
        self.as_static().member_filters(member)
    }

    /// Whether `next` differs from this in what members cannot follow at runtime: the
    /// partitions, the filters, the buffered limits.
    pub(crate) fn same_shape(&self, next: &Self) -> bool {
        self.max_members == next.max_members
            && self.partitioning_filters == next.partitioning_filters
            && self.max_buffered_messages == next.max_buffered_messages
            && self.max_buffered_bytes == next.max_buffered_bytes
    }

    /// The same assignment seen as a static group (orbit shares the code).
    fn as_static(&self) -> StaticGroupConfig {
        let config = if self.member_mappings.is_empty() {
            StaticGroupConfig::with_members(self.max_members, self.members.iter().cloned())
        } else {
            StaticGroupConfig::with_mappings(self.max_members, self.member_mappings.iter().cloned())
        };
        config.filters(self.partitioning_filters.iter().map(|f| f.filter.clone()))
    }

    /// Check orbit's rules.
    ///
    /// # Errors
    /// `InvalidConfig`, naming the rule broken.
    pub fn validate(&self) -> Result<(), GroupError> {
        for pf in &self.partitioning_filters {
            let tokens: Vec<&str> = pf.filter.split('.').collect();
            let wildcards = tokens.iter().filter(|t| **t == "*").count() as u32;
            if pf.filter.is_empty() || (wildcards == 0 && tokens.last() != Some(&">")) {
                return Err(invalid(
                    "partitioning filter",
                    &pf.filter,
                    "needs a `*` wildcard or a trailing `>`",
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for &w in &pf.partitioning_wildcards {
                if w < 1 || w > wildcards || !seen.insert(w) {
                    return Err(invalid(
                        "partitioning wildcard",
                        &w.to_string(),
                        "is not a distinct index of one of the filter's `*` wildcards",
                    ));
                }
            }
        }
        self.as_static().validate()
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, integers and vectors of them always serialise")
    }

    /// Read a stored configuration and check it.
    ///
    /// # Errors
    /// `InvalidConfig` for JSON that is not an elastic group or breaks orbit's rules.
    pub fn from_json(json: &[u8]) -> Result<Self, GroupError> {
        let config: Self = serde_json::from_slice(json)
            .map_err(|e| Error::with_source(GroupErrorKind::InvalidConfig, e))?;
        config.validate()?;
        Ok(config)
    }
}

impl Connection {
    /// Create the elastic group `group` on `stream`: its configuration where orbit keeps it,
    /// and its work-queue stream sourcing `stream` with the partition token inserted, with the
    /// original's replicas and storage. Idempotent for the same partitions, filters and limits
    /// (members and mappings of an existing group are kept).
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; `StreamNotFound`; `ConfigDrift` when the
    /// group exists with other partitions, filters or limits.
    pub(crate) async fn create_elastic_group(
        &self,
        stream: &str,
        group: &str,
        config: &ElasticGroupConfig,
    ) -> Result<ElasticGroupConfig, GroupError> {
        self.require_groups()?;
        super::admin::check_names(stream, group)?;
        config.validate()?;
        let cgs = elastic_stream_name(stream, group);
        super::admin::check_name("stream name", &cgs)?;
        let mut original = self.jetstream().get_stream(stream).await.map_err(js)?;
        let info = original.info().await.map_err(js)?;
        let (replicas, storage) = (info.config.num_replicas, info.config.storage);
        let store = self
            .elastic_bucket(Some(replicas))
            .await?
            .ok_or_else(|| invalid("bucket", ELASTIC_BUCKET, "was not created"))?;
        let key = config_key(stream, group);
        let stored = match store.create(&key, config.to_json().into()).await {
            Ok(_) => config.clone(),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                let existing = self.elastic_group(stream, group).await?;
                if !existing.same_shape(config) {
                    return Err(refused(
                        GroupErrorKind::ConfigDrift,
                        "group",
                        &key,
                        "exists with other partitions, filters or limits",
                    ));
                }
                existing
            }
            Err(err) => return Err(js(err)),
        };
        let transforms = if stored.partitioning_filters.is_empty() {
            vec![PartitioningFilter::new(">", [])]
        } else {
            stored.partitioning_filters.clone()
        }
        .iter()
        .map(|f| SubjectTransform {
            source: f.filter.clone(),
            destination: f.destination(stored.max_members),
        })
        .collect();
        let jetstream = self.jetstream();
        match jetstream.get_stream(&cgs).await {
            Ok(_) => Ok(stored),
            Err(err) if matches!(err.kind(), GetStreamErrorKind::JetStream(ref e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                jetstream
                    .create_stream(stream::Config {
                        name: cgs,
                        retention: RetentionPolicy::WorkQueue,
                        num_replicas: replicas,
                        storage,
                        max_messages: stored.max_buffered_messages,
                        max_bytes: stored.max_buffered_bytes,
                        discard: DiscardPolicy::New,
                        sources: Some(vec![Source {
                            name: stream.to_owned(),
                            subject_transforms: transforms,
                            ..Default::default()
                        }]),
                        allow_direct: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(js)?;
                Ok(stored)
            }
            Err(err) => Err(js(err)),
        }
    }

    /// The configuration of the elastic group `group` on `stream`.
    ///
    /// # Errors
    /// `NotFound` for an unknown group; `InvalidConfig` for a stored configuration that
    /// breaks orbit's rules; `Unsupported` before 2.11.
    pub(crate) async fn elastic_group(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<ElasticGroupConfig, GroupError> {
        Ok(self.elastic_entry(stream, group).await?.0)
    }

    async fn elastic_entry(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<(ElasticGroupConfig, u64), GroupError> {
        self.require_groups()?;
        super::admin::check_names(stream, group)?;
        let key = config_key(stream, group);
        let unknown = || refused(GroupErrorKind::NotFound, "group", &key, "does not exist");
        let store = self.elastic_bucket(None).await?.ok_or_else(unknown)?;
        match store.entry(&key).await.map_err(js)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok((ElasticGroupConfig::from_json(&entry.value)?, entry.revision))
            }
            _ => Err(unknown()),
        }
    }

    /// The elastic groups on `stream`, by name.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; server errors.
    pub(crate) async fn list_elastic_groups(
        &self,
        stream: &str,
    ) -> Result<Vec<String>, GroupError> {
        self.require_groups()?;
        super::admin::check_name("stream name", stream)?;
        match self.elastic_bucket(None).await? {
            Some(store) => super::admin::groups_in(&store, stream).await,
            None => Ok(Vec::new()),
        }
    }

    /// Delete the elastic group: its configuration (members stop) and its stream.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; server errors.
    pub(crate) async fn delete_elastic_group(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<(), GroupError> {
        self.require_groups()?;
        super::admin::check_names(stream, group)?;
        if let Some(store) = self.elastic_bucket(None).await? {
            store.delete(config_key(stream, group)).await.map_err(js)?;
        }
        match self
            .jetstream()
            .delete_stream(elastic_stream_name(stream, group))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.kind(), GetStreamErrorKind::JetStream(ref e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(())
            }
            Err(err) => Err(js(err)),
        }
    }

    /// Add `members` to the elastic group; returns the members now. Partitions move to them
    /// with orbit's (small) churn; the members serving adjust at once.
    ///
    /// # Errors
    /// `InvalidConfig` when the group uses member mappings; `ConfigDrift` when the
    /// configuration changed in between (compare-and-set lost); those of
    /// [`Natty::elastic_group`].
    pub(crate) async fn add_elastic_members<I, S>(
        &self,
        stream: &str,
        group: &str,
        members: I,
    ) -> Result<Vec<String>, GroupError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let added: Vec<String> = members.into_iter().map(Into::into).collect();
        self.change_members(stream, group, |current| {
            for member in added {
                if !member.is_empty() && !current.contains(&member) {
                    current.push(member);
                }
            }
        })
        .await
    }

    /// Drop `members` from the elastic group; returns the members now.
    ///
    /// # Errors
    /// See [`Natty::add_elastic_members`].
    pub(crate) async fn drop_elastic_members<I, S>(
        &self,
        stream: &str,
        group: &str,
        members: I,
    ) -> Result<Vec<String>, GroupError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let dropped: Vec<String> = members.into_iter().map(Into::into).collect();
        self.change_members(stream, group, |current| {
            current.retain(|m| !dropped.contains(m));
        })
        .await
    }

    async fn change_members(
        &self,
        stream: &str,
        group: &str,
        change: impl FnOnce(&mut Vec<String>),
    ) -> Result<Vec<String>, GroupError> {
        let (mut config, revision) = self.elastic_entry(stream, group).await?;
        if !config.member_mappings.is_empty() {
            return Err(invalid(
                "group",
                &config_key(stream, group),
                "uses member mappings; set mappings instead",
            ));
        }
        change(&mut config.members);
        for member in &config.members {
            super::admin::check_name("consumer name", member)?;
        }
        self.put_elastic(stream, group, &config, Some(revision))
            .await?;
        Ok(config.members)
    }

    /// Replace the elastic group's membership by `mappings` (every partition exactly once).
    ///
    /// # Errors
    /// `InvalidConfig` for mappings that break orbit's rules; those of
    /// [`Natty::elastic_group`].
    pub(crate) async fn set_elastic_mappings(
        &self,
        stream: &str,
        group: &str,
        mappings: impl IntoIterator<Item = MemberMapping>,
    ) -> Result<(), GroupError> {
        let (mut config, revision) = self.elastic_entry(stream, group).await?;
        config.members.clear();
        config.member_mappings = mappings.into_iter().collect();
        config.validate()?;
        self.put_elastic(stream, group, &config, Some(revision))
            .await
    }

    /// Remove the elastic group's member mappings (leaving it without members).
    ///
    /// # Errors
    /// Those of [`Natty::elastic_group`].
    pub(crate) async fn delete_elastic_mappings(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<(), GroupError> {
        let (mut config, revision) = self.elastic_entry(stream, group).await?;
        config.member_mappings.clear();
        self.put_elastic(stream, group, &config, Some(revision))
            .await
    }

    /// The partitions `member` of the elastic group owns now.
    ///
    /// # Errors
    /// Those of [`Natty::elastic_group`]; `NotMember`.
    pub(crate) async fn elastic_member_partitions(
        &self,
        stream: &str,
        group: &str,
        member: &str,
    ) -> Result<Vec<u32>, GroupError> {
        let config = self.elastic_group(stream, group).await?;
        if !config.is_member(member) {
            return Err(not_member(member));
        }
        Ok(config.partitions_of(member))
    }

    /// Make the pinned instance of `member` of the elastic group step down.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; server errors.
    pub(crate) async fn elastic_member_step_down(
        &self,
        stream: &str,
        group: &str,
        member: &str,
    ) -> Result<(), GroupError> {
        self.require_groups()?;
        super::admin::check_names(stream, group)?;
        super::admin::check_name("consumer name", member)?;
        self.jetstream()
            .get_stream(elastic_stream_name(stream, group))
            .await
            .map_err(js)?
            .unpin_consumer(member, super::config::PRIORITY_GROUP)
            .await
            .map_err(js)
    }

    async fn put_elastic(
        &self,
        stream: &str,
        group: &str,
        config: &ElasticGroupConfig,
        revision: Option<u64>,
    ) -> Result<(), GroupError> {
        let key = config_key(stream, group);
        let store = self
            .elastic_bucket(None)
            .await?
            .ok_or_else(|| refused(GroupErrorKind::NotFound, "group", &key, "does not exist"))?;
        match revision {
            Some(revision) => match store.update(&key, config.to_json().into(), revision).await {
                Ok(_) => Ok(()),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Err(Error::with_source(GroupErrorKind::ConfigDrift, err))
                }
                Err(err) => Err(js(err)),
            },
            None => store
                .put(&key, config.to_json().into())
                .await
                .map(drop)
                .map_err(|e| Error::with_source(GroupErrorKind::JetStream, e)),
        }
    }

    /// The elastic groups' bucket; created with `replicas` when given and missing.
    pub(crate) async fn elastic_bucket(
        &self,
        create_with_replicas: Option<usize>,
    ) -> Result<Option<kv::Store>, GroupError> {
        super::admin::bucket(self, ELASTIC_BUCKET, create_with_replicas).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_writes_for_empty_lists() {
        let go = br#"{"max_members":2,"partitioning_filters":[{"filter":"a.*","partitioning_wildcards":null}],"members":null,"member_mappings":null}"#;
        let config = ElasticGroupConfig::from_json(go).unwrap();
        assert_eq!(config.partitions(), 2);
        assert!(config.member_names().is_empty());
        let go = br#"{"max_members":2,"partitioning_filters":null,"members":["x"]}"#;
        assert_eq!(
            ElasticGroupConfig::from_json(go)
                .unwrap()
                .partitions_of("x"),
            vec![0, 1]
        );
    }

    #[test]
    fn transform_destinations_are_orbits() {
        let by_first = PartitioningFilter::new("orders.*.*", [1]);
        assert_eq!(
            by_first.destination(8),
            "{{Partition(8,1)}}.orders.{{Wildcard(1)}}.{{Wildcard(2)}}"
        );
        assert_eq!(
            PartitioningFilter::new(">", []).destination(3),
            "{{Partition(3)}}.>"
        );
    }

    #[test]
    fn refuses_what_orbit_refuses() {
        let bad_wildcard = ElasticGroupConfig::new(2, [PartitioningFilter::new("a.*", [2])]);
        assert_eq!(
            bad_wildcard.validate().unwrap_err().kind(),
            GroupErrorKind::InvalidConfig
        );
        let no_wildcard = ElasticGroupConfig::new(2, [PartitioningFilter::new("a.b", [])]);
        assert_eq!(
            no_wildcard.validate().unwrap_err().kind(),
            GroupErrorKind::InvalidConfig
        );
    }
}
