//! Orbit's member-to-partition assignment and the partition token of a subject.
//!
//! The assignment must be orbit's exactly, or a natty member and an orbit member of one group
//! would both consume some partitions and neither others. Members are de-duplicated, sorted
//! (byte order, as Go sorts strings) and capped at the partition count; each gets a
//! contiguous run of `partitions / members` partitions, and the remainder goes round-robin
//! from the first member, so adding or dropping a member moves few partitions.

/// The partitions `member` owns among `members` for `partitions` partitions, ascending.
pub(crate) fn assign(members: &[String], partitions: u32, member: &str) -> Vec<u32> {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    members.truncate(partitions as usize);
    let count = members.len() as u32;
    if count == 0 {
        return Vec::new();
    }
    let per_member = partitions / count;
    (0..partitions)
        .filter(|&p| {
            let owner = if p < count * per_member {
                p / per_member
            } else {
                (p - count * per_member) % count
            };
            members[owner as usize] == member
        })
        .collect()
}

/// Split `<partition>.<rest>` into the partition number and the subject the handler sees.
pub(crate) fn split(subject: &str) -> Option<(u32, &str)> {
    let (token, rest) = subject.split_once('.')?;
    Some((token.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(members: &[&str], partitions: u32) -> Vec<Vec<u32>> {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        members
            .iter()
            .map(|m| assign(&members, partitions, m))
            .collect()
    }

    #[test]
    fn contiguous_runs_then_remainder_round_robin() {
        // Orbit: 10 partitions over 3 members gives runs of 3, then 9 to the first member.
        assert_eq!(
            owners(&["c", "a", "b"], 10),
            vec![vec![6, 7, 8], vec![0, 1, 2, 9], vec![3, 4, 5]]
        );
        assert_eq!(owners(&["a", "b"], 2), vec![vec![0], vec![1]]);
    }

    #[test]
    fn members_beyond_the_partition_count_get_nothing() {
        assert_eq!(owners(&["b", "a", "c"], 2), vec![vec![1], vec![0], vec![]]);
        assert_eq!(owners(&["a", "a"], 3), vec![vec![0, 1, 2], vec![0, 1, 2]]);
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for partitions in 1..20u32 {
            for count in 1..8usize {
                let members: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
                let mut all: Vec<u32> = members
                    .iter()
                    .flat_map(|m| assign(&members, partitions, m))
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..partitions).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn split_takes_the_first_token() {
        assert_eq!(split("3.orders.eu"), Some((3, "orders.eu")));
        assert_eq!(split("orders.eu"), None);
        assert_eq!(split("3"), None);
    }
}
