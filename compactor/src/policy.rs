//! A topic's cleanup configuration, as the compactor applies it. The agent validated and
//! stored the full configuration (defaults included) when the topic was created.

use std::collections::BTreeMap;

/// What the compactor does to a topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPolicy {
    /// `cleanup.policy` includes `delete`: retention applies.
    pub delete: bool,
    /// `cleanup.policy` includes `compact`: log compaction applies.
    pub compact: bool,
    /// `retention.ms`; `None` = keep forever.
    pub retention_ms: Option<i64>,
    /// `retention.bytes` per partition; `None` = no limit.
    pub retention_bytes: Option<i64>,
    /// `delete.retention.ms`: how long a tombstone outlives its key; `None` = forever.
    pub delete_retention_ms: Option<i64>,
    /// `min.compaction.lag.ms`: records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// `archive.enabled`: records are archived as Parquet before retention or log
    /// compaction removes them.
    pub archive: bool,
}

impl TopicPolicy {
    /// Reads the policy of a stored topic configuration.
    pub fn from_config(config: &BTreeMap<String, String>) -> Self {
        let number = |key: &str| config.get(key).and_then(|v| v.parse::<i64>().ok());
        let limit = |key: &str| number(key).filter(|n| *n >= 0);
        let policy = config
            .get("cleanup.policy")
            .map_or("delete", String::as_str);
        Self {
            delete: policy.split(',').any(|p| p == "delete"),
            compact: policy.split(',').any(|p| p == "compact"),
            retention_ms: limit("retention.ms"),
            retention_bytes: limit("retention.bytes"),
            delete_retention_ms: limit("delete.retention.ms"),
            min_compaction_lag_ms: limit("min.compaction.lag.ms").unwrap_or(0),
            archive: config.get("archive.enabled").is_some_and(|v| v == "true"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kafka_policies() {
        let config = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let p = TopicPolicy::from_config(&config(&[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("delete.retention.ms", "5"),
            ("archive.enabled", "true"),
        ]));
        assert!(p.delete && p.compact && p.archive);
        assert_eq!(p.retention_ms, None);
        assert_eq!(p.retention_bytes, Some(1000));
        assert_eq!(p.delete_retention_ms, Some(5));
        let p = TopicPolicy::from_config(&config(&[]));
        assert!(p.delete && !p.compact && !p.archive);
    }
}
