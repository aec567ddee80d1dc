//! A static group's configuration, stored as orbit.go's `pcgroups` stores it.
//!
//! The JSON shape, bucket and key are orbit's, so a group created by orbit.go or
//! `natsio-pcgroups` reads here and the other way round:
//! `{"max_members":4,"filters":["orders.*"],"members":["a","b"]}` under
//! `<stream>.<group>` in the `static-consumer-groups` bucket.

use serde::{Deserialize, Serialize};

use super::error::{invalid, GroupError};

/// The key/value bucket orbit keeps static groups' configurations in.
pub const STATIC_BUCKET: &str = "static-consumer-groups";

/// The priority group every member consumer pulls in (orbit's `PCG`).
pub const PRIORITY_GROUP: &str = "PCG";

/// The key of a group's configuration: `<stream>.<group>`.
pub fn config_key(stream: &str, group: &str) -> String {
    format!("{stream}.{group}")
}

/// The durable consumer of `member` in `group`: `<group>-<member>`.
pub fn consumer_name(group: &str, member: &str) -> String {
    format!("{group}-{member}")
}

/// Partitions assigned to one member by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMapping {
    member: String,
    partitions: Vec<u32>,
}

impl MemberMapping {
    /// `member` owns `partitions`.
    pub fn new(member: impl Into<String>, partitions: impl IntoIterator<Item = u32>) -> Self {
        Self {
            member: member.into(),
            partitions: partitions.into_iter().collect(),
        }
    }

    /// The member's name.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The partitions it owns.
    pub fn partitions(&self) -> &[u32] {
        &self.partitions
    }
}

/// A static group: a fixed number of partitions, spread over a list of members (by orbit's
/// assignment) or mapped to members by hand.
///
/// # Example
/// ```
/// use natty::group::StaticGroupConfig;
///
/// let config = StaticGroupConfig::with_members(6, ["a", "b", "c"]).filters(["orders.*"]);
/// assert_eq!(config.partitions_of("b"), vec![2, 3]);
/// assert_eq!(config.member_filters("b"), vec!["2.orders.*", "3.orders.*"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticGroupConfig {
    max_members: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    member_mappings: Vec<MemberMapping>,
}

impl StaticGroupConfig {
    /// `partitions` partitions (orbit's "max members") spread over `members` by orbit's
    /// assignment: sorted, de-duplicated, at most `partitions` of them, contiguous ranges.
    pub fn with_members<I, S>(partitions: u32, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            max_members: partitions,
            filters: Vec::new(),
            members: members.into_iter().map(Into::into).collect(),
            member_mappings: Vec::new(),
        }
    }

    /// `partitions` partitions mapped to members by hand; every partition exactly once.
    pub fn with_mappings(
        partitions: u32,
        mappings: impl IntoIterator<Item = MemberMapping>,
    ) -> Self {
        Self {
            max_members: partitions,
            filters: Vec::new(),
            members: Vec::new(),
            member_mappings: mappings.into_iter().collect(),
        }
    }

    /// Only these subjects (after the partition token) are consumed. As in orbit, filters
    /// apply to groups with `members`; member mappings always consume all subjects of their
    /// partitions.
    pub fn filters<I, S>(mut self, filters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.filters = filters.into_iter().map(Into::into).collect();
        self
    }

    /// The number of partitions (orbit's `max_members`).
    pub fn partitions(&self) -> u32 {
        self.max_members
    }

    /// The configured filters.
    pub fn filter_subjects(&self) -> &[String] {
        &self.filters
    }

    /// The members as configured (before de-duplication and capping).
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The member mappings, when the group was configured with them.
    pub fn member_mappings(&self) -> &[MemberMapping] {
        &self.member_mappings
    }

    /// Whether `member` belongs to the group (orbit's `IsInMembership`).
    pub fn is_member(&self, member: &str) -> bool {
        self.members.iter().any(|m| m == member)
            || self.member_mappings.iter().any(|m| m.member == member)
    }

    /// The partitions `member` consumes, ascending; empty for a non-member (and for a listed
    /// member beyond the first `partitions()` in sorted order).
    pub fn partitions_of(&self, member: &str) -> Vec<u32> {
        if !self.members.is_empty() {
            super::partition::assign(&self.members, self.max_members, member)
        } else {
            let mut partitions: Vec<u32> = self
                .member_mappings
                .iter()
                .filter(|m| m.member == member)
                .flat_map(|m| m.partitions.iter().copied())
                .collect();
            partitions.sort_unstable();
            partitions.dedup();
            partitions
        }
    }

    /// The filter subjects of `member`'s consumer, in orbit's order: for each filter (`>`
    /// when none), `<partition>.<filter>` for each partition; `<partition>.>` for mappings.
    pub fn member_filters(&self, member: &str) -> Vec<String> {
        if !self.members.is_empty() {
            let partitions = self.partitions_of(member);
            let any = [String::from(">")];
            let filters = if self.filters.is_empty() {
                &any[..]
            } else {
                &self.filters[..]
            };
            filters
                .iter()
                .flat_map(|filter| partitions.iter().map(move |p| format!("{p}.{filter}")))
                .collect()
        } else {
            // Orbit lists a mapping's partitions in the order given.
            let mut filters: Vec<String> = Vec::new();
            for mapping in self.member_mappings.iter().filter(|m| m.member == member) {
                for p in &mapping.partitions {
                    let filter = format!("{p}.>");
                    if !filters.contains(&filter) {
                        filters.push(filter);
                    }
                }
            }
            filters
        }
    }

    /// Check orbit's rules; see [`GroupErrorKind::InvalidConfig`](super::GroupErrorKind).
    ///
    /// # Errors
    /// `InvalidConfig`, naming the rule broken.
    pub fn validate(&self) -> Result<(), GroupError> {
        let count = self.max_members;
        if count < 1 {
            return Err(invalid("max_members", "0", "must be at least 1"));
        }
        if !self.members.is_empty() && !self.member_mappings.is_empty() {
            return Err(invalid(
                "group",
                "members",
                "has both members and member mappings",
            ));
        }
        for filter in &self.filters {
            crate::validate::filter_subject(filter).map_err(|e| {
                crate::error::Error::with_source(super::GroupErrorKind::InvalidConfig, e)
            })?;
        }
        if self.member_mappings.is_empty() {
            return Ok(());
        }
        if self.member_mappings.len() > count as usize {
            return Err(invalid(
                "member_mappings",
                &self.member_mappings.len().to_string(),
                "has more mappings than partitions",
            ));
        }
        let mut seen_members = std::collections::HashSet::new();
        let mut seen_partitions = std::collections::HashSet::new();
        for mapping in &self.member_mappings {
            if !seen_members.insert(mapping.member.as_str()) {
                return Err(invalid("member", &mapping.member, "is mapped twice"));
            }
            for &p in &mapping.partitions {
                if p >= count {
                    return Err(invalid("partition", &p.to_string(), "is out of range"));
                }
                if !seen_partitions.insert(p) {
                    return Err(invalid("partition", &p.to_string(), "is mapped twice"));
                }
            }
        }
        if seen_partitions.len() != count as usize {
            return Err(invalid(
                "member_mappings",
                &seen_partitions.len().to_string(),
                "do not map every partition",
            ));
        }
        Ok(())
    }

    /// The configuration as stored (orbit's JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, integers and vectors of them always serialise")
    }

    /// Read a stored configuration and check it.
    ///
    /// # Errors
    /// `InvalidConfig` for JSON that is not a group configuration or breaks orbit's rules.
    pub fn from_json(json: &[u8]) -> Result<Self, GroupError> {
        let config: Self = serde_json::from_slice(json).map_err(|e| {
            crate::error::Error::with_source(super::GroupErrorKind::InvalidConfig, e)
        })?;
        config.validate()?;
        Ok(config)
    }
}
