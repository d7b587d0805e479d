//! Topic names and configuration: Kafka's rules, checked once when a topic is created.

use std::collections::BTreeMap;

use strata_storage::Compression;

use crate::{Error, Result};

/// Default `max.message.bytes`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Default `message.timestamp.before.max.ms` (Kafka 4's: unlimited).
pub const DEFAULT_TIMESTAMP_BEFORE_MAX_MS: i64 = i64::MAX;
/// Default `message.timestamp.after.max.ms` (Kafka 4's: one hour).
pub const DEFAULT_TIMESTAMP_AFTER_MAX_MS: i64 = 3_600_000;

/// Every config key a topic accepts, with its default.
pub const TOPIC_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("archive.enabled", "false"),
    ("cleanup.policy", "delete"),
    ("compression.type", "none"),
    ("delete.retention.ms", "86400000"),
    ("max.message.bytes", "1048576"),
    ("message.timestamp.after.max.ms", "3600000"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.type", "CreateTime"),
    ("min.compaction.lag.ms", "0"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
];

/// Kafka topic configs that have nothing to act on here (segments, indexes, flushing and
/// replication belong to the object store and the agents' own settings): a Kafka client
/// may set them (Kafka Streams sets `segment.bytes` on its internal topics, tools set
/// `min.insync.replicas`); they are accepted and not kept.
pub const IGNORED_KAFKA_CONFIGS: &[&str] = &[
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "message.downconversion.enable",
    "min.cleanable.dirty.ratio",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Checks a topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    validate_key_part("topic name", name)
}

/// Checks a name that becomes part of metastore keys (topic names, group ids): 1 to 249
/// characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_key_part(what: &str, name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 249 || !valid_chars || name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!(
            "invalid {what} '{}': use 1 to 249 characters of [a-zA-Z0-9._-], not '.' or '..'",
            crate::limits::shown(name)
        )));
    }
    Ok(())
}

/// Checks that `key` is a topic config key (or one of [`IGNORED_KAFKA_CONFIGS`]).
pub fn check_config_key(key: &str) -> Result<()> {
    if TOPIC_CONFIG_DEFAULTS.iter().any(|(k, _)| *k == key) || IGNORED_KAFKA_CONFIGS.contains(&key)
    {
        return Ok(());
    }
    let known: Vec<&str> = TOPIC_CONFIG_DEFAULTS.iter().map(|(k, _)| *k).collect();
    Err(Error::InvalidArgument(format!(
        "unknown topic config '{}'; known keys: {}",
        crate::limits::shown(key),
        known.join(", ")
    )))
}

/// The keys of a full configuration whose value is not the default.
pub fn overridden(config: &BTreeMap<String, String>) -> Vec<String> {
    config
        .iter()
        .filter(|(k, v)| {
            TOPIC_CONFIG_DEFAULTS
                .iter()
                .find(|(d, _)| d == k)
                .is_none_or(|(_, default)| default != v)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Validates `given` and returns the full configuration: defaults plus `given`.
pub fn resolve_config(given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    let mut config: BTreeMap<String, String> = TOPIC_CONFIG_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (key, value) in given {
        let bad = |expected: &str| {
            Error::InvalidArgument(format!(
                "invalid value '{}' for topic config '{key}': expected {expected}",
                crate::limits::shown(value)
            ))
        };
        match key.as_str() {
            "archive.enabled" => {
                if !matches!(value.as_str(), "true" | "false") {
                    return Err(bad("true or false"));
                }
            }
            "cleanup.policy" => {
                if !matches!(
                    value.as_str(),
                    "delete" | "compact" | "compact,delete" | "delete,compact"
                ) {
                    return Err(bad("delete, compact or compact,delete"));
                }
            }
            "compression.type" => {
                Compression::parse(value).ok_or_else(|| bad("none, lz4 or zstd"))?;
            }
            "max.message.bytes" => {
                let n: i64 = value.parse().map_err(|_| bad("a number of bytes"))?;
                if !(1..=64 << 20).contains(&n) {
                    return Err(bad("1 to 67108864"));
                }
            }
            "retention.ms" | "retention.bytes" | "delete.retention.ms" => {
                let n: i64 = value.parse().map_err(|_| bad("an integer"))?;
                if n < -1 {
                    return Err(bad("-1 (unlimited) or more"));
                }
            }
            "min.compaction.lag.ms"
            | "message.timestamp.before.max.ms"
            | "message.timestamp.after.max.ms" => {
                let n: i64 = value.parse().map_err(|_| bad("an integer"))?;
                if n < 0 {
                    return Err(bad("0 or more"));
                }
            }
            "message.timestamp.type" => {
                if !matches!(value.as_str(), "CreateTime" | "LogAppendTime") {
                    return Err(bad("CreateTime or LogAppendTime"));
                }
            }
            ignored if IGNORED_KAFKA_CONFIGS.contains(&ignored) => {
                tracing::debug!(
                    key,
                    "a Kafka topic config with nothing to act on here: not kept"
                );
                continue;
            }
            _ => check_config_key(key)?,
        }
        config.insert(key.clone(), value.clone());
    }
    Ok(config)
}

/// The parts of a topic's configuration the agent acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    /// Largest record accepted, bytes of key + value + headers.
    pub max_message_bytes: usize,
    /// Block compression.
    pub compression: Compression,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    /// `archive.enabled`: the compactor archives the topic as Parquet.
    pub archived: bool,
    /// `message.timestamp.type=LogAppendTime`: records get the agent's time.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`: how far before the agent's time a record's
    /// timestamp may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far after the agent's time it may be.
    pub timestamp_after_max_ms: i64,
}

impl TopicSettings {
    /// Reads the settings of a stored (already validated) configuration.
    pub fn from_config(config: &BTreeMap<String, String>) -> Self {
        Self {
            max_message_bytes: config
                .get("max.message.bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            compression: config
                .get("compression.type")
                .and_then(|v| Compression::parse(v))
                .unwrap_or_default(),
            compacted: config
                .get("cleanup.policy")
                .is_some_and(|p| p.split(',').any(|p| p == "compact")),
            archived: config.get("archive.enabled").is_some_and(|v| v == "true"),
            log_append_time: config
                .get("message.timestamp.type")
                .is_some_and(|v| v == "LogAppendTime"),
            // Topics stored before these keys existed get Kafka 4's defaults.
            timestamp_before_max_ms: config
                .get("message.timestamp.before.max.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_TIMESTAMP_BEFORE_MAX_MS),
            timestamp_after_max_ms: config
                .get("message.timestamp.after.max.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_TIMESTAMP_AFTER_MAX_MS),
        }
    }

    /// The timestamp a record is stored with, given the one it was sent with (0 = now)
    /// and the agent's time: the agent's on a `LogAppendTime` topic; otherwise the sent
    /// one, if it is within `message.timestamp.before.max.ms` / `after.max.ms` of now.
    pub fn record_timestamp(&self, index: usize, sent_ms: i64, now_ms: i64) -> Result<i64> {
        if self.log_append_time {
            return Ok(now_ms);
        }
        let refuse = |what: String| {
            Err(Error::InvalidTimestamp(format!(
                "record {index} has timestamp {sent_ms}, {what}; nothing of this request was \
                 written"
            )))
        };
        match sent_ms {
            0 => Ok(now_ms),
            t if t < 0 => refuse(
                "which is negative: use milliseconds since the Unix epoch, or 0 for the \
                 agent's time"
                    .to_string(),
            ),
            t if now_ms.saturating_sub(t) > self.timestamp_before_max_ms => refuse(format!(
                "more than the topic's message.timestamp.before.max.ms ({} ms) before the \
                 agent's time {now_ms}",
                self.timestamp_before_max_ms
            )),
            t if t.saturating_sub(now_ms) > self.timestamp_after_max_ms => refuse(format!(
                "more than the topic's message.timestamp.after.max.ms ({} ms) after the \
                 agent's time {now_ms}",
                self.timestamp_after_max_ms
            )),
            t => Ok(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        for good in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            validate_name(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_is_validated_and_completed() {
        let given = BTreeMap::from([("compression.type".to_string(), "zstd".to_string())]);
        let config = resolve_config(&given).unwrap();
        assert_eq!(config["compression.type"], "zstd");
        assert_eq!(config["max.message.bytes"], "1048576");
        let settings = TopicSettings::from_config(&config);
        assert_eq!(settings.compression, Compression::Zstd);

        for (k, v) in [
            ("compression.type", "brotli"),
            ("max.message.bytes", "0"),
            ("archive.enabled", "yes"),
            ("message.timestamp.type", "Now"),
            ("message.timestamp.after.max.ms", "-1"),
            ("nope", "1"),
        ] {
            let given = BTreeMap::from([(k.to_string(), v.to_string())]);
            let err = resolve_config(&given).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn timestamps_follow_the_topic_settings() {
        let now = 1_800_000_000_000;
        let create = TopicSettings::from_config(&resolve_config(&BTreeMap::new()).unwrap());
        assert_eq!(create.record_timestamp(0, 0, now).unwrap(), now);
        assert_eq!(
            create.record_timestamp(0, 5, now).unwrap(),
            5,
            "no lower bound by default"
        );
        assert_eq!(
            create.record_timestamp(0, now + 3_600_000, now).unwrap(),
            now + 3_600_000
        );
        let ten_years = 10 * 365 * 86_400_000;
        let err = create
            .record_timestamp(3, now + ten_years, now)
            .unwrap_err();
        assert!(
            err.to_string().contains("message.timestamp.after.max.ms"),
            "{err}"
        );
        assert!(create.record_timestamp(0, -1, now).is_err());
        let strict = TopicSettings::from_config(
            &resolve_config(&BTreeMap::from([(
                "message.timestamp.before.max.ms".to_string(),
                "1000".to_string(),
            )]))
            .unwrap(),
        );
        let err = strict.record_timestamp(0, now - 1001, now).unwrap_err();
        assert!(
            err.to_string().contains("message.timestamp.before.max.ms"),
            "{err}"
        );
        let append = TopicSettings::from_config(
            &resolve_config(&BTreeMap::from([(
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            )]))
            .unwrap(),
        );
        assert_eq!(
            append.record_timestamp(0, now + ten_years, now).unwrap(),
            now
        );
    }
}
