//! [`ServiceConfig`] and [`EndpointConfig`]: what a service and each of its endpoints are
//! called, and the names checked before anything is sent.

use std::collections::HashMap;
use std::time::Duration;

use crate::election::Leadership;
use crate::error::{Error, ServeErrorKind, ValidationError};
use crate::validate;

/// The queue group endpoints join unless told otherwise, as in every NATS client.
pub const DEFAULT_QUEUE_GROUP: &str = "q";

/// A service: its name (shared by every instance), semver version, description and metadata,
/// as PING and INFO report them; the default queue group of its endpoints; how many requests
/// each endpoint handles at once and how long in-flight requests may finish on shutdown.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use natty::service::ServiceConfig;
///
/// let config = ServiceConfig::new("orders", "1.2.0")
///     .description("order lookups")
///     .metadata([("team", "billing")])
///     .concurrency(32)
///     .shutdown_grace(Duration::from_secs(5));
/// assert_eq!(config.name(), "orders");
/// ```
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: String,
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) queue_group: String,
    pub(crate) concurrency: usize,
    pub(crate) shutdown_grace: Duration,
}

impl ServiceConfig {
    /// The service `name` (`[A-Za-z0-9_-]+`) at `version` (semver, `1.2.0`), checked when the
    /// service starts.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            metadata: HashMap::new(),
            queue_group: DEFAULT_QUEUE_GROUP.to_owned(),
            concurrency: 64,
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What the service does, as INFO reports it (default empty).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Metadata PING and INFO report (default none).
    pub fn metadata<K: Into<String>, V: Into<String>>(
        mut self,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.metadata = metadata
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The queue group of endpoints that name none ([`DEFAULT_QUEUE_GROUP`] by default).
    pub fn queue_group(mut self, queue_group: impl Into<String>) -> Self {
        self.queue_group = queue_group.into();
        self
    }

    /// Requests each endpoint handles at once (default 64); more wait in its subscription.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long in-flight requests may run after shutdown before they are cut off, unanswered
    /// (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Check the name, version and queue group.
    pub(crate) fn check(&self) -> Result<(), Error<ServeErrorKind>> {
        service_name("service name", &self.name)
            .and_then(|()| semver(&self.version))
            .and_then(|()| check_queue_group(&self.queue_group))
            .map_err(|err| Error::with_source(ServeErrorKind::InvalidConfig, err))
    }
}

/// One endpoint: its name (`[A-Za-z0-9_-]+`, as INFO and STATS report it), its subject
/// (the name unless set), its queue group (the group's or service's unless set) and metadata.
///
/// # Example
/// ```
/// use natty::service::EndpointConfig;
///
/// let get = EndpointConfig::new("get")
///     .subject("orders.get.*")
///     .queue_group("orders-workers")
///     .metadata([("format", "json")]);
/// assert_eq!(get.name(), "get");
/// ```
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub(crate) name: String,
    pub(crate) subject: Option<String>,
    pub(crate) queue_group: Option<String>,
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) leadership: Option<Leadership>,
}

impl EndpointConfig {
    /// The endpoint `name`, on the subject of the same name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subject: None,
            queue_group: None,
            metadata: HashMap::new(),
            leadership: None,
        }
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject it serves, below its group's prefix (`*` and a final `>` allowed).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The queue group it joins, instead of its group's or service's.
    pub fn queue_group(mut self, queue_group: impl Into<String>) -> Self {
        self.queue_group = Some(queue_group.into());
        self
    }

    /// Metadata INFO reports for it (default none).
    pub fn metadata<K: Into<String>, V: Into<String>>(
        mut self,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.metadata = metadata
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Serve the endpoint only while `leadership` leads: it subscribes when this node gains
    /// leadership and unsubscribes when the term ends (calls under way finish within the
    /// shutdown grace), so a follower never answers and requests reach the leader alone.
    /// Its subscription is made by [`ServiceInstance::run`](super::ServiceInstance::run),
    /// not when the endpoint is added. INFO and STATS list it once an instance has led (with
    /// the counts of all its terms), also while that instance follows again: async-nats keeps
    /// an endpoint's entry once added.
    pub fn leader_only(mut self, leadership: Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// The subject under `prefix` and the queue group (`fallback` unless set), both checked.
    pub(crate) fn resolve(
        &self,
        prefix: Option<&str>,
        fallback: &str,
    ) -> Result<(String, String), Error<ServeErrorKind>> {
        let own = self.subject.as_deref().unwrap_or(&self.name);
        let subject = match prefix {
            Some(prefix) => format!("{prefix}.{own}"),
            None => own.to_owned(),
        };
        let queue_group = self.queue_group.as_deref().unwrap_or(fallback).to_owned();
        service_name("endpoint name", &self.name)
            .and_then(|()| validate::filter_subject(&subject))
            .and_then(|()| check_queue_group(&queue_group))
            .map_err(|err| Error::with_source(ServeErrorKind::InvalidConfig, err))?;
        Ok((subject, queue_group))
    }
}

/// A service or endpoint name: `[A-Za-z0-9_-]+`, as the service API requires.
fn service_name(what: &'static str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(what, name, "is empty"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ValidationError::new(
            what,
            name,
            "may only contain A-Z, a-z, 0-9, _ and -",
        ));
    }
    Ok(())
}

/// A queue group: not empty, no whitespace, control character or wildcard (as Go's
/// micro checks it).
fn check_queue_group(queue_group: &str) -> Result<(), ValidationError> {
    let invalid = |reason| Err(ValidationError::new("queue group", queue_group, reason));
    if queue_group.is_empty() {
        return invalid("is empty");
    }
    if queue_group
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
    {
        return invalid("contains whitespace, a control character or a wildcard");
    }
    Ok(())
}

/// A semantic version (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`, as semver.org defines it).
fn semver(version: &str) -> Result<(), ValidationError> {
    let invalid = || ValidationError::new("service version", version, "is not a semver version");
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let number = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
    };
    let identifiers = |text: &str, numeric_rule: bool| {
        text.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!numeric_rule || !id.bytes().all(|b| b.is_ascii_digit()) || number(id))
        })
    };
    let parts: Vec<&str> = core.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|&part| number(part))
        && pre.is_none_or(|pre| identifiers(pre, true))
        && build.is_none_or(|build| identifiers(build, false));
    if ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_accepts_what_semver_org_accepts_and_refuses_the_rest() {
        for good in [
            "0.0.0",
            "1.2.3",
            "10.20.30",
            "1.0.0-alpha.1",
            "1.0.0+build.5",
            "1.0.0-0.3.7+x-y",
        ] {
            assert!(semver(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3+",
            "v1.2.3",
            "1.2.3-a..b",
        ] {
            assert!(semver(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_endpoint_subject_goes_under_its_group_and_defaults_to_its_name() {
        let get = EndpointConfig::new("get");
        assert_eq!(
            get.resolve(Some("orders"), "q").unwrap(),
            ("orders.get".to_owned(), "q".to_owned())
        );
        let custom = EndpointConfig::new("get")
            .subject("lookup.*")
            .queue_group("w");
        assert_eq!(
            custom.resolve(None, "q").unwrap(),
            ("lookup.*".to_owned(), "w".to_owned())
        );
        assert!(EndpointConfig::new("a.b").resolve(None, "q").is_err());
        assert!(ServiceConfig::new("orders", "1.0").check().is_err());
        assert!(ServiceConfig::new("or ders", "1.0.0").check().is_err());
        assert!(ServiceConfig::new("orders", "1.0.0").check().is_ok());
    }
}
