//! The controller's decision: which live agent serves each partition.
//!
//! [`assign`] is a pure function of the previous assignment, the topics and the live
//! agents, so the controller that runs it can change (a new one picks up from the stored
//! assignment) without changing the answer. It keeps three properties:
//! - **complete**: every partition of every topic is assigned to a live agent (to none
//!   only while no agent is live); deleted topics disappear;
//! - **even**: agents' partition counts differ by at most one;
//! - **sticky**: a partition whose agent is still live keeps it unless that agent holds
//!   more than its share; only the excess moves, and the agents that already hold the
//!   most keep the larger shares.

use std::collections::{BTreeMap, HashMap};

use strata_metastore::{Assignment, TopicMeta};

/// Per topic, the agent of each partition.
pub(crate) type Placement = BTreeMap<String, Vec<Option<String>>>;

/// Group coordinator slots: a group's coordinator is the agent of slot
/// `murmur2(group id) % COORDINATOR_SLOTS`.
pub(crate) const COORDINATOR_SLOTS: u32 = 16;

/// The coordinator slot of a group.
pub(crate) fn coordinator_slot(group_id: &str) -> u32 {
    strata_proto::partition_for_key(group_id.as_bytes(), COORDINATOR_SLOTS)
}

/// The agent of each coordinator slot: spread over the live agents as partitions are
/// (complete, even, sticky), independently of the partitions.
pub(crate) fn assign_coordinators(previous: &Assignment, live: &[String]) -> Vec<Option<String>> {
    const SLOTS: &str = "";
    let as_topic = Assignment {
        topics: BTreeMap::from([(SLOTS.to_string(), previous.coordinators.clone())]),
        ..Default::default()
    };
    let slots = TopicMeta {
        name: SLOTS.to_string(),
        topic_id: String::new(),
        partitions: COORDINATOR_SLOTS,
        config: BTreeMap::new(),
        created_at_ms: 0,
    };
    assign(&as_topic, &[slots], live)
        .remove(SLOTS)
        .unwrap_or_default()
}

/// The placement the controller wants given `previous`, the topics and the live agents.
pub(crate) fn assign(previous: &Assignment, topics: &[TopicMeta], live: &[String]) -> Placement {
    let mut live: Vec<&str> = live.iter().map(String::as_str).collect();
    live.sort_unstable();
    live.dedup();
    // Keep every placement on a live agent, for partitions that still exist.
    let mut placement: Placement = topics
        .iter()
        .map(|topic| {
            let old = previous.topics.get(&topic.name);
            let agents = (0..topic.partitions as usize)
                .map(|p| {
                    old.and_then(|agents| agents.get(p))
                        .and_then(|agent| agent.as_deref())
                        .filter(|agent| live.binary_search(agent).is_ok())
                        .map(str::to_string)
                })
                .collect();
            (topic.name.clone(), agents)
        })
        .collect();
    if live.is_empty() {
        return placement;
    }
    let mut counts: HashMap<&str, usize> = live.iter().map(|a| (*a, 0)).collect();
    for agent in placement.values().flatten().flatten() {
        *counts
            .get_mut(agent.as_str())
            .expect("only live agents kept") += 1;
    }
    // Shares: total / agents each, one more for the first `total % agents` of them,
    // ordered by how many they hold now (most first) so that the fewest partitions move.
    let total: usize = placement.values().map(Vec::len).sum();
    let (base, extra) = (total / live.len(), total % live.len());
    let mut by_load = live.clone();
    by_load.sort_by(|a, b| counts[b].cmp(&counts[a]).then(a.cmp(b)));
    let quota: HashMap<&str, usize> = by_load
        .iter()
        .enumerate()
        .map(|(i, agent)| (*agent, base + usize::from(i < extra)))
        .collect();
    // Agents over their share give up their last partitions.
    let mut excess: HashMap<&str, usize> = live
        .iter()
        .map(|a| (*a, counts[a].saturating_sub(quota[a])))
        .collect();
    for agents in placement.values_mut().rev() {
        for slot in agents.iter_mut().rev() {
            let Some(agent) = slot.as_deref() else {
                continue;
            };
            let agent = *live.iter().find(|a| **a == agent).expect("live");
            let over = excess.get_mut(agent).expect("live");
            if *over > 0 {
                *over -= 1;
                *counts.get_mut(agent).expect("live") -= 1;
                *slot = None;
            }
        }
    }
    // Unplaced partitions go, in order, to the agent with the most room left.
    for agents in placement.values_mut() {
        for slot in agents.iter_mut().filter(|slot| slot.is_none()) {
            let agent = *live
                .iter()
                .max_by(|a, b| {
                    let room = |x: &&str| quota[x] as isize - counts[x] as isize;
                    room(a).cmp(&room(b)).then(b.cmp(a))
                })
                .expect("at least one live agent");
            *counts.get_mut(agent).expect("live") += 1;
            *slot = Some(agent.to_string());
        }
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: u32) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            topic_id: String::new(),
            partitions,
            config: Default::default(),
            created_at_ms: 0,
        }
    }

    fn agents(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn counts(placement: &Placement) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for agent in placement.values().flatten() {
            *counts.entry(agent.clone().expect("assigned")).or_default() += 1;
        }
        counts
    }

    fn previous(placement: Placement) -> Assignment {
        Assignment {
            generation: 1,
            controller: "c".into(),
            topics: placement,
            coordinators: Vec::new(),
        }
    }

    #[test]
    fn coordinator_slots_spread_and_stick() {
        let first = assign_coordinators(&Assignment::default(), &agents(&["x", "y"]));
        assert_eq!(first.len(), COORDINATOR_SLOTS as usize);
        assert!(first.iter().all(Option::is_some));
        let previous = Assignment {
            coordinators: first.clone(),
            ..Default::default()
        };
        let second = assign_coordinators(&previous, &agents(&["x", "y", "z"]));
        let on_z = second.iter().filter(|a| a.as_deref() == Some("z")).count();
        assert_eq!(on_z, 5);
        let moved = first.iter().zip(&second).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 5);
        assert!(coordinator_slot("some-group") < COORDINATOR_SLOTS);
    }

    fn moved(a: &Placement, b: &Placement) -> usize {
        a.iter()
            .map(|(topic, agents)| agents.iter().zip(&b[topic]).filter(|(x, y)| x != y).count())
            .sum()
    }

    #[test]
    fn spreads_evenly_and_completely() {
        let topics = [topic("a", 16), topic("b", 5)];
        let placement = assign(&Assignment::default(), &topics, &agents(&["x", "y", "z"]));
        assert_eq!(placement["a"].len(), 16);
        assert_eq!(placement["b"].len(), 5);
        let counts = counts(&placement);
        assert_eq!(counts.values().sum::<usize>(), 21);
        assert!(counts.values().all(|c| *c == 7), "{counts:?}");
        // A topic's partitions are spread too, not piled on one agent.
        let a_on_x = placement["a"]
            .iter()
            .filter(|p| p.as_deref() == Some("x"))
            .count();
        assert!((5..=6).contains(&a_on_x), "{placement:?}");
    }

    #[test]
    fn same_input_same_answer() {
        let topics = [topic("a", 10)];
        let live = agents(&["x", "y", "z"]);
        let first = assign(&Assignment::default(), &topics, &live);
        assert_eq!(assign(&previous(first.clone()), &topics, &live), first);
    }

    #[test]
    fn a_dead_agents_partitions_move_and_nothing_else() {
        let topics = [topic("a", 12)];
        let before = assign(&Assignment::default(), &topics, &agents(&["x", "y", "z"]));
        let after = assign(&previous(before.clone()), &topics, &agents(&["x", "y"]));
        assert_eq!(counts(&after).values().copied().collect::<Vec<_>>(), [6, 6]);
        // Exactly z's four partitions moved.
        assert_eq!(moved(&before, &after), 4);
        for (b, a) in before["a"].iter().zip(&after["a"]) {
            if b.as_deref() != Some("z") {
                assert_eq!(b, a);
            }
        }
    }

    #[test]
    fn a_new_agent_takes_only_its_share() {
        let topics = [topic("a", 12)];
        let before = assign(&Assignment::default(), &topics, &agents(&["x", "y"]));
        let after = assign(
            &previous(before.clone()),
            &topics,
            &agents(&["x", "y", "z"]),
        );
        assert_eq!(counts(&after)["z"], 4);
        assert_eq!(moved(&before, &after), 4);
    }

    #[test]
    fn topics_created_grown_and_deleted() {
        let live = agents(&["x", "y"]);
        let before = assign(
            &Assignment::default(),
            &[topic("a", 4), topic("b", 2)],
            &live,
        );
        let after = assign(&previous(before.clone()), &[topic("a", 6)], &live);
        assert!(!after.contains_key("b"));
        assert_eq!(after["a"].len(), 6);
        assert!(after["a"].iter().all(Option::is_some));
        assert_eq!(counts(&after).values().copied().collect::<Vec<_>>(), [3, 3]);
    }

    #[test]
    fn no_live_agent_no_owner() {
        let placement = assign(&Assignment::default(), &[topic("a", 3)], &[]);
        assert_eq!(placement["a"], vec![None, None, None]);
    }
}
