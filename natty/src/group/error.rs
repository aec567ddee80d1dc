//! The error of consumer group calls.

use std::fmt;

use crate::error::Error;

/// The error of consumer group calls.
pub type GroupError = Error<GroupErrorKind>;

/// Why a consumer group call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupErrorKind {
    /// A name or the group's configuration is unusable (orbit's rules: at least one partition,
    /// members or mappings but not both, every partition mapped exactly once); nothing was sent.
    InvalidConfig,
    /// The connected server is older than 2.11 and has no pinned-client priority groups.
    Unsupported,
    /// The group's stream does not exist.
    StreamNotFound,
    /// No group of that name exists on the stream (the unknown group).
    NotFound,
    /// The member is not in the group's membership.
    NotMember,
    /// The group, or the member's consumer, exists with another configuration than the one
    /// given or served: it was changed under a running member, or created differently.
    ConfigDrift,
    /// The group was deleted while a member served it.
    Deleted,
    /// The server did not answer in time.
    TimedOut,
    /// The server rejected the call; see the source.
    JetStream,
    /// The service's `poll_ready` failed.
    Service,
}

impl fmt::Display for GroupErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidConfig => "invalid consumer group configuration",
            Self::Unsupported => "consumer groups need nats-server 2.11 or later",
            Self::StreamNotFound => "stream not found",
            Self::NotFound => "consumer group not found",
            Self::NotMember => "not a member of the consumer group",
            Self::ConfigDrift => "consumer group configuration differs",
            Self::Deleted => "consumer group deleted",
            Self::TimedOut => "timed out",
            Self::JetStream => "jetstream error",
            Self::Service => "service failed",
        })
    }
}

/// An `InvalidConfig` error saying what was wrong with which value.
pub(crate) fn invalid(what: &'static str, value: &str, reason: &'static str) -> GroupError {
    refused(GroupErrorKind::InvalidConfig, what, value, reason)
}

/// An error of `kind` saying what was wrong with which value.
/// The refusal of `member`, which is not in the group.
pub(crate) fn not_member(member: &str) -> GroupError {
    refused(
        GroupErrorKind::NotMember,
        "member",
        member,
        "is not in the group",
    )
}

pub(crate) fn refused(
    kind: GroupErrorKind,
    what: &'static str,
    value: &str,
    reason: &'static str,
) -> GroupError {
    Error::with_source(
        kind,
        crate::error::ValidationError::new(what, value, reason),
    )
}
