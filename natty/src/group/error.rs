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

/// Whether `err` is the server not answering for now (a timeout, or "no responders" while a
/// cluster moves a stream's leader), which waiting may cure, by async-nats' kinds.
pub(crate) fn transient(err: &GroupError) -> bool {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    use async_nats::StatusCode;

    if err.kind() == GroupErrorKind::TimedOut {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(request) = cause.downcast_ref::<async_nats::RequestError>() {
            if matches!(
                request.kind(),
                async_nats::RequestErrorKind::NoResponders | async_nats::RequestErrorKind::TimedOut
            ) {
                return true;
            }
        }
        if let Some(get) = cause.downcast_ref::<async_nats::jetstream::stream::DirectGetError>() {
            match get.kind() {
                DirectGetErrorKind::TimedOut => return true,
                DirectGetErrorKind::ErrorResponse(status, _)
                    if status == StatusCode::NO_RESPONDERS =>
                {
                    return true
                }
                _ => {}
            }
        }
        if crate::error::timed_out(cause) {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind};

    use super::*;

    #[test]
    fn no_responders_and_timeouts_are_transient_refusals_are_not() {
        let no_responders = DirectGetError::new(DirectGetErrorKind::ErrorResponse(
            async_nats::StatusCode::NO_RESPONDERS,
            "no responders".into(),
        ));
        // As a KV read wraps it: the group error's source's source.
        let read = async_nats::jetstream::kv::EntryError::with_source(
            async_nats::jetstream::kv::EntryErrorKind::Other,
            no_responders,
        );
        assert!(transient(&Error::with_source(
            GroupErrorKind::JetStream,
            read
        )));
        assert!(transient(&Error::new(GroupErrorKind::TimedOut)));
        let gone = DirectGetError::new(DirectGetErrorKind::NotFound);
        assert!(!transient(&Error::with_source(
            GroupErrorKind::JetStream,
            gone
        )));
        assert!(!transient(&Error::new(GroupErrorKind::NotFound)));
        assert!(!transient(&Error::new(GroupErrorKind::InvalidConfig)));
    }
}
