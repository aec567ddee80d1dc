//! Creating, reading, listing and deleting static groups, and stepping a member down.

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, SubjectTransform};
use async_nats::jetstream::ErrorCode;

use super::config::{config_key, consumer_name, StaticGroupConfig, PRIORITY_GROUP, STATIC_BUCKET};
use super::error::{invalid, not_member, refused, GroupError, GroupErrorKind};
use crate::error::Error;
use crate::Natty;

/// What natty reads from an async-nats error kind: the server's error code, if any, and
/// whether the call timed out.
pub(crate) trait Classify {
    fn class(&self) -> (Option<ErrorCode>, bool);
}

macro_rules! classify {
    (with_code: $($kind:ty),*; timed_out_only: $($plain:ty),*; neither: $($none:ty),*) => {
        $(impl Classify for $kind {
            fn class(&self) -> (Option<ErrorCode>, bool) {
                match self {
                    Self::JetStream(err) => (Some(err.error_code()), false),
                    other => (None, matches!(other, Self::TimedOut)),
                }
            }
        })*
        $(impl Classify for $plain {
            fn class(&self) -> (Option<ErrorCode>, bool) {
                (None, matches!(self, Self::TimedOut))
            }
        })*
        $(impl Classify for $none {
            fn class(&self) -> (Option<ErrorCode>, bool) {
                (None, false)
            }
        })*
    };
}

use async_nats::jetstream::context::{
    CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind, KeyValueErrorKind,
    RequestErrorKind,
};
use async_nats::jetstream::kv::{
    CreateErrorKind, EntryErrorKind, UpdateErrorKind, WatchErrorKind, WatcherErrorKind,
};
use async_nats::jetstream::stream::{ConsumerCreateStrictErrorKind, ConsumerErrorKind};

impl Classify for GetStreamErrorKind {
    fn class(&self) -> (Option<ErrorCode>, bool) {
        match self {
            Self::JetStream(err) => (Some(err.error_code()), false),
            _ => (None, false),
        }
    }
}

classify!(
    with_code: CreateStreamErrorKind, ConsumerErrorKind, ConsumerCreateStrictErrorKind;
    timed_out_only: RequestErrorKind, CreateKeyValueErrorKind, EntryErrorKind, WatchErrorKind, UpdateErrorKind;
    neither: KeyValueErrorKind, CreateErrorKind, WatcherErrorKind
);

/// Sort an async-nats error into a group error by server code, keeping it as the source.
pub(crate) fn js<K>(err: async_nats::error::Error<K>) -> GroupError
where
    K: Classify + Clone + std::fmt::Debug + std::fmt::Display + PartialEq + Send + Sync + 'static,
{
    let (code, timed_out) = err.kind().class();
    let kind = match code {
        Some(ErrorCode::STREAM_NOT_FOUND) => GroupErrorKind::StreamNotFound,
        _ if timed_out => GroupErrorKind::TimedOut,
        _ => GroupErrorKind::JetStream,
    };
    Error::with_source(kind, err)
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), GroupError> {
    crate::validate::name(what, name)
        .map_err(|e| Error::with_source(GroupErrorKind::InvalidConfig, e))
}

/// The partitioning a stream applies to incoming subjects: which subjects, how many
/// partitions, which wildcards pick the partition.
///
/// # Example
/// ```
/// use natty::group::Partitioning;
///
/// let partitioning = Partitioning::new("orders.*.*", 8).wildcards([1]);
/// assert_eq!(partitioning.destination(), "{{partition(8,1)}}.orders.{{wildcard(1)}}.{{wildcard(2)}}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partitioning {
    subjects: String,
    partitions: u32,
    wildcards: Vec<u32>,
    replicas: usize,
}

impl Partitioning {
    /// Partition `subjects` (a filter whose wildcards are `*` tokens) into `partitions`
    /// partitions, by all its wildcards unless [`Partitioning::wildcards`] picks some.
    pub fn new(subjects: impl Into<String>, partitions: u32) -> Self {
        Self {
            subjects: subjects.into(),
            partitions,
            wildcards: Vec::new(),
            replicas: 1,
        }
    }

    /// Keep the stream on this many servers (default 1); a group's configuration bucket
    /// follows its stream's replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Partition by these wildcards (1-based, as in `{{wildcard(n)}}`).
    pub fn wildcards(mut self, wildcards: impl IntoIterator<Item = u32>) -> Self {
        self.wildcards = wildcards.into_iter().collect();
        self
    }

    /// The subject transform's destination: the partition token, then the subject.
    pub fn destination(&self) -> String {
        let mut n = 0u32;
        let rest: Vec<String> = self
            .subjects
            .split('.')
            .map(|token| {
                if token == "*" {
                    n += 1;
                    format!("{{{{wildcard({n})}}}}")
                } else {
                    token.to_owned()
                }
            })
            .collect();
        let by: Vec<String> = if self.wildcards.is_empty() {
            (1..=n).map(|w| w.to_string()).collect()
        } else {
            self.wildcards.iter().map(u32::to_string).collect()
        };
        format!(
            "{{{{partition({},{})}}}}.{}",
            self.partitions,
            by.join(","),
            rest.join(".")
        )
    }
}

impl Natty {
    pub(crate) fn require_groups(&self) -> Result<(), GroupError> {
        if crate::server::version_at_least(&self.server_version(), 2, 11) {
            Ok(())
        } else {
            Err(Error::new(GroupErrorKind::Unsupported))
        }
    }

    /// Create the stream `name` for a static group: it captures `partitioning`'s subjects and
    /// stores each message under `<partition>.<subject>` (a `partition(n, ...)` subject
    /// transform), with natty's stream defaults. Idempotent.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad name or a filter with no `*` wildcard; `ConfigDrift` when
    /// the stream exists with another transform.
    pub async fn create_partitioned_stream(
        &self,
        name: &str,
        partitioning: &Partitioning,
    ) -> Result<(), GroupError> {
        check_name("stream name", name)?;
        crate::validate::filter_subject(&partitioning.subjects)
            .map_err(|e| Error::with_source(GroupErrorKind::InvalidConfig, e))?;
        if partitioning.partitions == 0 || !partitioning.subjects.split('.').any(|t| t == "*") {
            return Err(invalid(
                "partitioning",
                &partitioning.subjects,
                "needs at least one partition and one `*` wildcard",
            ));
        }
        let transform = SubjectTransform {
            source: partitioning.subjects.clone(),
            destination: partitioning.destination(),
        };
        let jetstream = self.jetstream();
        match jetstream.get_stream(name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(js)?;
                if info.config.subject_transform.as_ref() == Some(&transform) {
                    Ok(())
                } else {
                    Err(refused(
                        GroupErrorKind::ConfigDrift,
                        "stream",
                        name,
                        "exists with another subject transform",
                    ))
                }
            }
            Err(err) if matches!(err.kind(), GetStreamErrorKind::JetStream(ref e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                jetstream
                    .create_stream(stream::Config {
                        name: name.to_owned(),
                        subjects: vec![partitioning.subjects.clone()],
                        subject_transform: Some(transform),
                        num_replicas: partitioning.replicas,
                        max_age: crate::stream::DEFAULT_MAX_AGE,
                        ..Default::default()
                    })
                    .await
                    .map_err(js)?;
                Ok(())
            }
            Err(err) => Err(js(err)),
        }
    }

    /// Create the static group `group` on `stream`, storing `config` where orbit keeps it
    /// (the bucket is created, with the stream's replicas, if missing). Idempotent: an
    /// existing group with the same configuration is fine. Returns the stored configuration.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig` before sending; `StreamNotFound`;
    /// `ConfigDrift` when the group exists with another configuration.
    pub async fn create_static_group(
        &self,
        stream: &str,
        group: &str,
        config: &StaticGroupConfig,
    ) -> Result<StaticGroupConfig, GroupError> {
        self.require_groups()?;
        check_names(stream, group)?;
        config.validate()?;
        for member in config
            .members()
            .iter()
            .map(String::as_str)
            .chain(config.member_mappings().iter().map(|m| m.member()))
        {
            check_name("consumer name", &consumer_name(group, member))?;
        }
        let mut info_stream = self.jetstream().get_stream(stream).await.map_err(js)?;
        let replicas = info_stream.info().await.map_err(js)?.config.num_replicas;
        let store = self
            .static_bucket(Some(replicas))
            .await?
            .ok_or_else(|| invalid("bucket", STATIC_BUCKET, "was not created"))?;
        let key = config_key(stream, group);
        match store.create(&key, config.to_json().into()).await {
            Ok(_) => Ok(config.clone()),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                let existing = self.static_group(stream, group).await?;
                if &existing == config {
                    Ok(existing)
                } else {
                    Err(refused(
                        GroupErrorKind::ConfigDrift,
                        "group",
                        &key,
                        "exists with another configuration",
                    ))
                }
            }
            Err(err) => Err(js(err)),
        }
    }

    /// The configuration of the static group `group` on `stream`.
    ///
    /// # Errors
    /// `NotFound` for an unknown group; `InvalidConfig` when the stored JSON breaks orbit's
    /// rules; `Unsupported` before 2.11.
    pub async fn static_group(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<StaticGroupConfig, GroupError> {
        self.require_groups()?;
        check_names(stream, group)?;
        let Some(store) = self.static_bucket(None).await? else {
            return Err(unknown(stream, group));
        };
        match store.get(config_key(stream, group)).await.map_err(js)? {
            Some(value) => StaticGroupConfig::from_json(&value),
            None => Err(unknown(stream, group)),
        }
    }

    /// The partitions `member` of the static group consumes now, ascending.
    ///
    /// # Errors
    /// Those of [`Natty::static_group`]; `NotMember` when `member` is not in the group.
    pub async fn static_member_partitions(
        &self,
        stream: &str,
        group: &str,
        member: &str,
    ) -> Result<Vec<u32>, GroupError> {
        let config = self.static_group(stream, group).await?;
        if !config.is_member(member) {
            return Err(not_member(member));
        }
        Ok(config.partitions_of(member))
    }

    /// The static groups on `stream`, by name (none when the bucket does not exist yet).
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig` for a bad stream name; server errors.
    pub async fn list_static_groups(&self, stream: &str) -> Result<Vec<String>, GroupError> {
        self.require_groups()?;
        check_name("stream name", stream)?;
        match self.static_bucket(None).await? {
            Some(store) => groups_in(&store, stream).await,
            None => Ok(Vec::new()),
        }
    }

    /// Delete the static group: its configuration (members watching it stop), then every
    /// consumer named `<group>-...` on the stream. Deleting a missing group is fine.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; `StreamNotFound`; server errors.
    pub async fn delete_static_group(&self, stream: &str, group: &str) -> Result<(), GroupError> {
        use futures_util::TryStreamExt;

        self.require_groups()?;
        check_names(stream, group)?;
        let js_stream = self.jetstream().get_stream(stream).await.map_err(js)?;
        if let Some(store) = self.static_bucket(None).await? {
            store.delete(config_key(stream, group)).await.map_err(js)?;
        }
        let prefix = format!("{group}-");
        let names: Vec<String> = js_stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| Error::with_source(GroupErrorKind::JetStream, e))?;
        for name in names.iter().filter(|n| n.starts_with(&prefix)) {
            match js_stream.delete_consumer(name).await {
                Ok(_) => {}
                Err(err) if matches!(err.kind(), ConsumerErrorKind::JetStream(ref e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
                    {}
                Err(err) => return Err(js(err)),
            }
        }
        Ok(())
    }

    /// Make the pinned instance of `member` step down: the server unpins it and pins the
    /// next instance that pulls (orbit's `StaticMemberStepDown`). The old instance stops at
    /// its next pull; see the [module docs](super) for how order is kept across the change.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`; `StreamNotFound`; server errors (no such
    /// consumer, nobody pinned).
    pub async fn static_member_step_down(
        &self,
        stream: &str,
        group: &str,
        member: &str,
    ) -> Result<(), GroupError> {
        self.require_groups()?;
        check_names(stream, group)?;
        let name = consumer_name(group, member);
        check_name("consumer name", &name)?;
        let js_stream = self.jetstream().get_stream(stream).await.map_err(js)?;
        js_stream
            .unpin_consumer(&name, PRIORITY_GROUP)
            .await
            .map_err(js)?;
        Ok(())
    }

    /// The static groups' bucket; created with `replicas` when given and missing.
    pub(crate) async fn static_bucket(
        &self,
        create_with_replicas: Option<usize>,
    ) -> Result<Option<kv::Store>, GroupError> {
        bucket(self, STATIC_BUCKET, create_with_replicas).await
    }
}

/// The group bucket `name`; created (file storage, as orbit does) with `replicas` when given
/// and missing.
pub(crate) async fn bucket(
    natty: &Natty,
    name: &str,
    create_with_replicas: Option<usize>,
) -> Result<Option<kv::Store>, GroupError> {
    let jetstream = natty.jetstream();
    match jetstream.get_key_value(name).await {
        Ok(store) => Ok(Some(store)),
        Err(err) if err.kind() == KeyValueErrorKind::GetBucket => {
            let Some(replicas) = create_with_replicas else {
                return Ok(None);
            };
            match jetstream
                .create_key_value(kv::Config {
                    bucket: name.to_owned(),
                    num_replicas: replicas.max(1),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
            {
                Ok(store) => Ok(Some(store)),
                // Another member or admin created it in between.
                Err(_) => Ok(Some(jetstream.get_key_value(name).await.map_err(js)?)),
            }
        }
        Err(err) => Err(js(err)),
    }
}

/// The groups of `stream` in a group bucket: keys `<stream>.<group>`.
pub(crate) async fn groups_in(store: &kv::Store, stream: &str) -> Result<Vec<String>, GroupError> {
    use futures_util::TryStreamExt;

    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(js)?
        .try_collect()
        .await
        .map_err(|e| Error::with_source(GroupErrorKind::JetStream, e))?;
    let mut groups: Vec<String> = keys
        .iter()
        .filter_map(|key| {
            let mut parts = key.split('.');
            (parts.next() == Some(stream)).then(|| parts.next().map(str::to_owned))?
        })
        .collect();
    groups.sort();
    Ok(groups)
}

pub(crate) fn check_names(stream: &str, group: &str) -> Result<(), GroupError> {
    check_name("stream name", stream)?;
    check_name("group name", group)
}

fn unknown(stream: &str, group: &str) -> GroupError {
    refused(
        GroupErrorKind::NotFound,
        "group",
        &config_key(stream, group),
        "does not exist",
    )
}
