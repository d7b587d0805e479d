//! Consumer group assignors: which member of a group should own each partition of the
//! topics its members subscribe to. Pure functions; the coordinator ([`crate::group`])
//! decides when to run them and moves partitions toward their answer without ever letting
//! two members own one partition at once.
//!
//! - [`Assignor::Uniform`] (the default): every subscribed partition goes to one of the
//!   members subscribed to its topic; members' counts differ by at most one when their
//!   subscriptions are the same; **sticky**: a partition stays with the member that had it
//!   in the previous target unless that member holds more than its share.
//! - [`Assignor::Range`]: per topic, the subscribed members (ordered by instance id, then
//!   member id) get contiguous ranges of partitions, the first ones one more, as Kafka's
//!   range assignor does. Deterministic, not sticky.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use strata_metastore::TopicPartition;

use crate::{Error, Result};

/// A group's assignment strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    /// The assignor named `name` (empty: the default, uniform).
    pub(crate) fn parse(name: &str) -> Result<Self> {
        match name {
            "" | "uniform" => Ok(Self::Uniform),
            "range" => Ok(Self::Range),
            other => Err(Error::InvalidArgument(format!(
                "unknown assignor '{other}': use 'uniform' or 'range'"
            ))),
        }
    }

    /// The assignor's name as stored.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Range => "range",
        }
    }
}

/// What the assignor knows of one member.
#[derive(Debug, Clone)]
pub(crate) struct MemberInput<'a> {
    pub member_id: &'a str,
    /// Orders members for the range assignor (static members keep their place).
    pub sort_key: &'a str,
    /// The existing topics the member subscribes to.
    pub topics: BTreeSet<&'a str>,
    /// The member's previous target (uniform keeps what it can of it).
    pub previous: &'a BTreeSet<TopicPartition>,
}

/// Each member's target: the partitions it should own.
pub(crate) type Targets = BTreeMap<String, BTreeSet<TopicPartition>>;

/// Runs `assignor` over `members`, given each subscribed topic's partition count.
pub(crate) fn assign(
    assignor: Assignor,
    members: &[MemberInput<'_>],
    partitions: &BTreeMap<String, u32>,
) -> Targets {
    match assignor {
        Assignor::Uniform => uniform(members, partitions),
        Assignor::Range => range(members, partitions),
    }
}

fn range(members: &[MemberInput<'_>], partitions: &BTreeMap<String, u32>) -> Targets {
    let mut targets: Targets = members
        .iter()
        .map(|m| (m.member_id.to_string(), BTreeSet::new()))
        .collect();
    for (topic, count) in partitions {
        let mut subscribed: Vec<&MemberInput<'_>> = members
            .iter()
            .filter(|m| m.topics.contains(topic.as_str()))
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        subscribed.sort_by_key(|m| (m.sort_key, m.member_id));
        let (base, extra) = (
            *count as usize / subscribed.len(),
            *count as usize % subscribed.len(),
        );
        let mut next = 0u32;
        for (i, member) in subscribed.iter().enumerate() {
            let take = (base + usize::from(i < extra)) as u32;
            let target = targets.get_mut(member.member_id).expect("every member");
            target.extend((next..next + take).map(|p| (topic.clone(), p)));
            next += take;
        }
    }
    targets
}

fn uniform(members: &[MemberInput<'_>], partitions: &BTreeMap<String, u32>) -> Targets {
    let mut targets: Targets = members
        .iter()
        .map(|m| (m.member_id.to_string(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return targets;
    }
    let subscribed = |member: &MemberInput<'_>, topic: &str| member.topics.contains(topic);
    // Every partition some member subscribes to, in order.
    let wanted: Vec<TopicPartition> = partitions
        .iter()
        .filter(|(topic, _)| members.iter().any(|m| subscribed(m, topic)))
        .flat_map(|(topic, count)| (0..*count).map(move |p| (topic.clone(), p)))
        .collect();
    // Shares: total / members each, one more for the members that held the most before,
    // so that the fewest partitions move.
    let (base, extra) = (wanted.len() / members.len(), wanted.len() % members.len());
    let kept_before = |m: &MemberInput<'_>| {
        m.previous
            .iter()
            .filter(|(t, p)| subscribed(m, t) && partitions.get(t).is_some_and(|c| p < c))
            .count()
    };
    let mut by_previous: Vec<&MemberInput<'_>> = members.iter().collect();
    by_previous.sort_by(|a, b| {
        kept_before(b)
            .cmp(&kept_before(a))
            .then(a.member_id.cmp(b.member_id))
    });
    let quota: HashMap<&str, usize> = by_previous
        .iter()
        .enumerate()
        .map(|(i, m)| (m.member_id, base + usize::from(i < extra)))
        .collect();
    // Sticky pass: keep previous partitions that still exist and are still subscribed,
    // up to the member's share.
    let mut taken: BTreeSet<&TopicPartition> = BTreeSet::new();
    for member in &by_previous {
        let target = targets.get_mut(member.member_id).expect("every member");
        for tp in member.previous {
            if target.len() >= quota[member.member_id] {
                break;
            }
            let exists = partitions.get(&tp.0).is_some_and(|count| tp.1 < *count);
            if exists && subscribed(member, &tp.0) && !taken.contains(tp) {
                target.insert(tp.clone());
                taken.insert(tp);
            }
        }
    }
    // The rest go to the subscribed member with the most room left (then the fewest
    // partitions), the partitions of topics with the fewest subscribers first; members
    // whose subscriptions differ may end above their share.
    let subscribers = |topic: &str| members.iter().filter(|m| subscribed(m, topic)).count();
    let mut rest: Vec<&TopicPartition> = wanted.iter().filter(|tp| !taken.contains(tp)).collect();
    rest.sort_by_key(|tp| (subscribers(&tp.0), *tp));
    for tp in rest {
        let member = members
            .iter()
            .filter(|m| subscribed(m, &tp.0))
            .max_by(|a, b| {
                let room = |m: &&MemberInput<'_>| {
                    quota[m.member_id] as isize - targets[m.member_id].len() as isize
                };
                room(a)
                    .cmp(&room(b))
                    .then(targets[b.member_id].len().cmp(&targets[a.member_id].len()))
                    .then(b.member_id.cmp(a.member_id))
            })
            .expect("only subscribed topics are wanted");
        targets
            .get_mut(member.member_id)
            .expect("every member")
            .insert(tp.clone());
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member<'a>(
        id: &'a str,
        topics: &[&'a str],
        previous: &'a BTreeSet<TopicPartition>,
    ) -> MemberInput<'a> {
        MemberInput {
            member_id: id,
            sort_key: id,
            topics: topics.iter().copied().collect(),
            previous,
        }
    }

    fn counts(targets: &Targets) -> Vec<usize> {
        targets.values().map(BTreeSet::len).collect()
    }

    /// Every wanted partition is in exactly one target.
    fn assert_exclusive_and_complete(targets: &Targets, partitions: &BTreeMap<String, u32>) {
        let mut seen = BTreeSet::new();
        for target in targets.values() {
            for tp in target {
                assert!(
                    seen.insert(tp.clone()),
                    "{tp:?} assigned twice: {targets:?}"
                );
            }
        }
        let total: u32 = partitions.values().sum();
        assert_eq!(seen.len(), total as usize, "{targets:?}");
    }

    #[test]
    fn uniform_spreads_evenly_and_is_sticky() {
        let none = BTreeSet::new();
        let partitions = BTreeMap::from([("t".to_string(), 12)]);
        let three = [
            member("a", &["t"], &none),
            member("b", &["t"], &none),
            member("c", &["t"], &none),
        ];
        let first = assign(Assignor::Uniform, &three, &partitions);
        assert_exclusive_and_complete(&first, &partitions);
        assert_eq!(counts(&first), [4, 4, 4]);

        // A fourth member joins: it gets three, and only three partitions move.
        let four = [
            member("a", &["t"], &first["a"]),
            member("b", &["t"], &first["b"]),
            member("c", &["t"], &first["c"]),
            member("d", &["t"], &none),
        ];
        let second = assign(Assignor::Uniform, &four, &partitions);
        assert_exclusive_and_complete(&second, &partitions);
        assert_eq!(counts(&second), [3, 3, 3, 3]);
        for id in ["a", "b", "c"] {
            assert!(
                second[id].is_subset(&first[id]),
                "{id} kept part of its own"
            );
        }

        // A member leaves: only its partitions move.
        let two = [
            member("a", &["t"], &second["a"]),
            member("b", &["t"], &second["b"]),
            member("d", &["t"], &second["d"]),
        ];
        let third = assign(Assignor::Uniform, &two, &partitions);
        assert_exclusive_and_complete(&third, &partitions);
        assert_eq!(counts(&third), [4, 4, 4]);
        for id in ["a", "b", "d"] {
            assert!(second[id].is_subset(&third[id]));
        }
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let none = BTreeSet::new();
        let partitions = BTreeMap::from([("t".to_string(), 4), ("u".to_string(), 2)]);
        let members = [member("a", &["t"], &none), member("b", &["t", "u"], &none)];
        let targets = assign(Assignor::Uniform, &members, &partitions);
        assert_exclusive_and_complete(&targets, &partitions);
        assert!(targets["a"].iter().all(|(t, _)| t == "t"));
        assert_eq!(counts(&targets), [3, 3]);
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let none = BTreeSet::new();
        let partitions = BTreeMap::from([("t".to_string(), 7), ("u".to_string(), 2)]);
        let members = [
            member("b", &["t", "u"], &none),
            member("a", &["t", "u"], &none),
            member("c", &["t"], &none),
        ];
        let targets = assign(Assignor::Range, &members, &partitions);
        assert_exclusive_and_complete(&targets, &partitions);
        let tp = |t: &str, ps: &[u32]| -> BTreeSet<TopicPartition> {
            ps.iter().map(|p| (t.to_string(), *p)).collect()
        };
        let mut a = tp("t", &[0, 1, 2]);
        a.extend(tp("u", &[0]));
        let mut b = tp("t", &[3, 4]);
        b.extend(tp("u", &[1]));
        assert_eq!(targets["a"], a);
        assert_eq!(targets["b"], b);
        assert_eq!(targets["c"], tp("t", &[5, 6]));
    }

    #[test]
    fn nothing_subscribed_nothing_assigned() {
        let none = BTreeSet::new();
        let partitions = BTreeMap::from([("t".to_string(), 3)]);
        let members = [member("a", &[], &none)];
        for assignor in [Assignor::Uniform, Assignor::Range] {
            assert!(assign(assignor, &members, &partitions)["a"].is_empty());
        }
    }
}
