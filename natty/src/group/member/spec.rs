//! The group's configuration as a member sees it, and what a change of it means for the member.

use super::config::Kind;
use crate::connection::Connection;
use crate::group::config::StaticGroupConfig;
use crate::group::elastic::ElasticGroupConfig;
use crate::group::error::GroupError;

/// A group's configuration, of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Spec {
    Static(StaticGroupConfig),
    Elastic(ElasticGroupConfig),
}

/// What a member does about a new configuration.
pub(super) enum Follow {
    Same,
    Rejoin(Spec),
    Drift,
}

impl Spec {
    pub(super) async fn read(
        natty: &Connection,
        kind: Kind,
        stream: &str,
        group: &str,
    ) -> Result<Self, GroupError> {
        Ok(match kind {
            Kind::Static => Spec::Static(natty.static_group(stream, group).await?),
            Kind::Elastic => Spec::Elastic(natty.elastic_group(stream, group).await?),
        })
    }

    pub(super) fn is_member(&self, member: &str) -> bool {
        match self {
            Spec::Static(config) => config.is_member(member),
            Spec::Elastic(config) => config.is_member(member),
        }
    }

    pub(super) fn member_filters(&self, member: &str) -> Vec<String> {
        match self {
            Spec::Static(config) => config.member_filters(member),
            Spec::Elastic(config) => config.member_filters(member),
        }
    }

    /// A static group never changes under its members; an elastic one may change members,
    /// and a member rejoins when its own filters change.
    pub(super) fn follow(&self, kind: Kind, json: &[u8], member: &str) -> Follow {
        let next = match kind {
            Kind::Static => StaticGroupConfig::from_json(json).map(Spec::Static),
            Kind::Elastic => ElasticGroupConfig::from_json(json).map(Spec::Elastic),
        };
        match (self, next) {
            (current, Ok(next)) if *current == next => Follow::Same,
            (Spec::Elastic(current), Ok(Spec::Elastic(next))) if current.same_shape(&next) => {
                if current.member_filters(member) == next.member_filters(member) {
                    Follow::Same
                } else {
                    Follow::Rejoin(Spec::Elastic(next))
                }
            }
            _ => Follow::Drift,
        }
    }
}
