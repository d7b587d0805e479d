//! The last hour, sampled: every [`SAMPLE_INTERVAL`] the sampler asks the cluster what
//! the CLI would — `Metadata`, every live agent's `AgentStats`, each topic's latest
//! offsets (`ListOffsets`), `ListGroups` and each group's `DescribeGroup` — and keeps the rates and lags in fixed rings.
//!
//! Invariants:
//! - bounded: each series keeps at most [`POINTS`] points (one hour); at most
//!   [`MAX_GROUPS`] groups are charted and [`MAX_TOPICS`] topics' throughput sampled
//!   (the first listed, up to [`MAX_SAMPLED_PARTITIONS`] partitions in all); a sample
//!   that takes over two intervals is dropped; a group or topic gone
//!   from the cluster is dropped at the next sample;
//! - a rate is a counter's increase over one interval, summed over the agents seen in
//!   both samples (an agent that restarted counts from its new counters, never
//!   negative);
//! - lag is the sum of `DescribeGroup`'s per-partition `lag`, the figure `strata group
//!   describe` prints.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use strata_client::proto;
use strata_client::proto::list_offsets_request::Spec;

use crate::Console;

/// How often the sampler runs.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Points kept per series: an hour of samples.
pub const POINTS: usize = 720;
/// Groups whose lag is charted.
pub const MAX_GROUPS: usize = 100;
/// Topics whose throughput is sampled.
pub const MAX_TOPICS: usize = 100;
/// Partitions whose latest offsets one sample reads, over all its topics.
pub const MAX_SAMPLED_PARTITIONS: usize = 4096;

/// One point: milliseconds since the Unix epoch, and a value.
pub type Point = (i64, f64);

/// A series of at most [`POINTS`] points, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Series(VecDeque<Point>);

impl Series {
    fn push(&mut self, point: Point) {
        if self.0.len() == POINTS {
            self.0.pop_front();
        }
        self.0.push_back(point);
    }

    /// Its points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.0.iter().copied().collect()
    }

    /// The newest value.
    pub fn last(&self) -> Option<f64> {
        self.0.back().map(|p| p.1)
    }
}

/// The cluster-wide rates charted on the Overview.
#[derive(Debug, Default, Clone)]
pub struct ClusterSeries {
    /// Records acknowledged per second.
    pub produce_records: Series,
    /// Bytes (keys, values, headers) accepted by Produce per second.
    pub produce_bytes: Series,
    /// Bytes returned by Fetch per second.
    pub fetch_bytes: Series,
    /// Segment PUTs per second.
    pub puts: Series,
    /// Object GETs per second.
    pub gets: Series,
    /// Read-cache hits as a share of lookups, over the interval (0 to 1).
    pub cache_hit_ratio: Series,
}

#[derive(Debug, Default)]
struct State {
    cluster: ClusterSeries,
    /// Each live agent's counters when it last answered, and when.
    counters: HashMap<String, (i64, proto::AgentStatsResponse)>,
    /// Each topic's records (high watermarks summed) at the last sample, and its rate.
    topics: BTreeMap<String, (i64, i64, f64)>,
    /// Each charted group's total lag.
    groups: BTreeMap<String, Series>,
}

/// What the sampler gathered.
#[derive(Debug, Default)]
pub struct History {
    state: Mutex<State>,
}

impl History {
    /// The Overview's series.
    pub fn cluster(&self) -> ClusterSeries {
        self.state.lock().expect("history lock").cluster.clone()
    }

    /// A group's total lag over time (empty until sampled).
    pub fn group_lag(&self, group: &str) -> Series {
        self.state
            .lock()
            .expect("history lock")
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// A topic's records per second over the last interval, once sampled twice.
    pub fn topic_rate(&self, topic: &str) -> Option<f64> {
        let state = self.state.lock().expect("history lock");
        state
            .topics
            .get(topic)
            .map(|(_, _, rate)| *rate)
            .filter(|r| r.is_finite())
    }

    /// Adds the cluster's rates from the counters of the agents that answered: each
    /// agent's increase over its own interval (since it last answered), summed. Agents
    /// that did not answer keep their last counters; agents no longer live are dropped.
    fn record_cluster(&self, now_ms: i64, live: &[String], stats: Vec<proto::AgentStatsResponse>) {
        let mut state = self.state.lock().expect("history lock");
        let mut rates = [0.0_f64; 5];
        let (mut hits, mut lookups, mut seen_twice) = (0u64, 0u64, 0usize);
        for now in &stats {
            if let Some((at, before)) = state.counters.get(&now.agent_id)
                && now_ms > *at
            {
                let seconds = (now_ms - at) as f64 / 1000.0;
                let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
                rates[0] += d(now.records_committed, before.records_committed);
                rates[1] += d(now.produce_bytes, before.produce_bytes);
                rates[2] += d(now.fetch_bytes, before.fetch_bytes);
                rates[3] += d(now.segment_puts, before.segment_puts);
                rates[4] += d(now.object_gets, before.object_gets);
                hits += now.cache_hits.saturating_sub(before.cache_hits);
                lookups += (now.cache_hits + now.cache_misses)
                    .saturating_sub(before.cache_hits + before.cache_misses);
                seen_twice += 1;
            }
        }
        state.counters.retain(|agent, _| live.contains(agent));
        for now in stats {
            state.counters.insert(now.agent_id.clone(), (now_ms, now));
        }
        if seen_twice == 0 {
            return;
        }
        let cluster = &mut state.cluster;
        cluster.produce_records.push((now_ms, rates[0]));
        cluster.produce_bytes.push((now_ms, rates[1]));
        cluster.fetch_bytes.push((now_ms, rates[2]));
        cluster.puts.push((now_ms, rates[3]));
        cluster.gets.push((now_ms, rates[4]));
        if lookups > 0 {
            cluster
                .cache_hit_ratio
                .push((now_ms, hits.min(lookups) as f64 / lookups as f64));
        }
    }

    fn record_topics(&self, now_ms: i64, topics: Vec<(String, i64)>) {
        let mut state = self.state.lock().expect("history lock");
        let mut next = BTreeMap::new();
        for (name, records) in topics {
            let rate = match state.topics.get(&name) {
                Some((at, before, _)) if now_ms > *at => {
                    (records - before).max(0) as f64 * 1000.0 / (now_ms - at) as f64
                }
                _ => f64::NAN,
            };
            next.insert(name, (now_ms, records, rate));
        }
        state.topics = next;
    }

    /// Adds each described group's lag; a group no longer listed loses its history, one
    /// that could not be described this time keeps it.
    fn record_groups(&self, now_ms: i64, listed: &[String], lags: BTreeMap<String, i64>) {
        let mut state = self.state.lock().expect("history lock");
        state.groups.retain(|group, _| listed.contains(group));
        for (group, lag) in lags {
            state
                .groups
                .entry(group)
                .or_default()
                .push((now_ms, lag as f64));
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The total lag `strata group describe` shows for a group: its partitions' `lag`
/// summed.
pub fn total_lag(described: &proto::DescribeGroupResponse) -> i64 {
    described.partitions.iter().map(|p| p.lag.max(0)).sum()
}

/// The sampler's channels, by address, kept from one sample to the next (a channel
/// reconnects by itself); an agent's is dropped when a call to it fails.
#[derive(Default)]
struct Channels(HashMap<String, strata_client::Connection>);

impl Channels {
    async fn admin(
        &mut self,
        console: &Console,
        address: &str,
    ) -> Result<strata_client::Admin, crate::ConsoleError> {
        if let Some(connection) = self.0.get(address) {
            return Ok(strata_client::Admin::new(connection.clone()));
        }
        let connection = console
            .connector(console.config().sampler_token.as_deref())?
            .connect(address)
            .await?;
        self.0.insert(address.to_string(), connection.clone());
        Ok(strata_client::Admin::new(connection))
    }
}

pub(crate) async fn run_sampler(console: Console) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut channels = Channels::default();
    loop {
        ticks.tick().await;
        match tokio::time::timeout(SAMPLE_INTERVAL * 2, sample(&console, &mut channels)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "console sampler: no sample this time");
                channels = Channels::default();
            }
            Err(_) => tracing::debug!("console sampler: no sample in time"),
        }
    }
}

#[tracing::instrument(name = "console.sample", skip_all)]
async fn sample(console: &Console, channels: &mut Channels) -> Result<(), crate::ConsoleError> {
    let admin = channels
        .admin(console, &console.config().grpc_address)
        .await?;
    let metadata = admin.metadata(Vec::new()).await?;
    // Each topic's latest offsets summed, as `strata topic offsets` lists them.
    let mut topics = Vec::new();
    let mut partitions = 0;
    for topic in metadata.topics.iter().take(MAX_TOPICS) {
        partitions += topic.partitions.len();
        if partitions > MAX_SAMPLED_PARTITIONS {
            break;
        }
        let latest = admin
            .list_offsets(&topic.name, Vec::new(), Spec::Latest(true))
            .await;
        if let Ok(latest) = latest {
            topics.push((
                topic.name.clone(),
                latest.iter().map(|p| p.offset.max(0)).sum(),
            ));
        }
    }
    console.history().record_topics(now_ms(), topics);
    // Every live agent's counters, as `strata stats --server <agent>` reads them.
    let mut stats = Vec::new();
    for agent in &metadata.agents {
        let answer = async {
            let admin = channels.admin(console, &agent.address).await?;
            Ok::<_, crate::ConsoleError>(admin.agent_stats().await?)
        };
        match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Ok(s)) => stats.push(s),
            Ok(Err(e)) => {
                tracing::debug!(agent = %agent.agent_id, error = %e, "no stats");
                channels.0.remove(&agent.address);
            }
            Err(_) => {
                tracing::debug!(agent = %agent.agent_id, "no stats in time");
                channels.0.remove(&agent.address);
            }
        }
    }
    // Agents gone from the cluster take their channels with them.
    channels.0.retain(|address, _| {
        *address == console.config().grpc_address
            || metadata.agents.iter().any(|a| a.address == *address)
    });
    let live: Vec<String> = metadata.agents.iter().map(|a| a.agent_id.clone()).collect();
    console.history().record_cluster(now_ms(), &live, stats);
    let mut lags = BTreeMap::new();
    let mut listed: Vec<String> = admin
        .list_groups()
        .await?
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    listed.sort();
    listed.truncate(MAX_GROUPS);
    for group in &listed {
        if let Ok(described) = admin.describe_group(group).await {
            lags.insert(group.clone(), total_lag(&described));
        }
    }
    console.history().record_groups(now_ms(), &listed, lags);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_keeps_its_history_when_one_describe_fails() {
        let history = History::default();
        let listed = vec!["g".to_string()];
        history.record_groups(1, &listed, BTreeMap::from([("g".to_string(), 5)]));
        history.record_groups(2, &listed, BTreeMap::new());
        assert_eq!(history.group_lag("g").points(), vec![(1, 5.0)]);
        history.record_groups(3, &[], BTreeMap::new());
        assert!(history.group_lag("g").points().is_empty());
    }

    #[test]
    fn series_keep_an_hour() {
        let mut series = Series::default();
        for i in 0..(POINTS + 10) {
            series.push((i as i64, i as f64));
        }
        assert_eq!(series.points().len(), POINTS);
        assert_eq!(series.points()[0].0, 10);
    }

    #[test]
    fn rates_count_agents_seen_twice() {
        let history = History::default();
        let stats = |id: &str, records: u64| proto::AgentStatsResponse {
            agent_id: id.into(),
            records_committed: records,
            ..Default::default()
        };
        let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        history.record_cluster(1_000, &live, vec![stats("a", 100), stats("b", 50)]);
        // Nobody was seen twice: no point.
        assert_eq!(history.cluster().produce_records.last(), None);
        history.record_cluster(
            3_000,
            &live,
            vec![stats("a", 300), stats("b", 10), stats("c", 999)],
        );
        // a: +200 over 2 s; b restarted (counts lower): 0; c is new: not counted.
        assert_eq!(history.cluster().produce_records.last(), Some(100.0));
        // a misses a sample; b answers; then a answers over its own 4 s.
        history.record_cluster(5_000, &live, vec![stats("b", 30)]);
        assert_eq!(history.cluster().produce_records.last(), Some(10.0));
        history.record_cluster(7_000, &live, vec![stats("a", 700)]);
        assert_eq!(history.cluster().produce_records.last(), Some(100.0));
    }
}
