//! Topic names and configuration: Kafka's rules, checked once when a topic is created.

use std::collections::BTreeMap;

use strata_storage::Compression;

use crate::{Error, Result};

/// Default `max.message.bytes`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Every config key a topic accepts, with its default.
pub const TOPIC_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("archive.enabled", "false"),
    ("cleanup.policy", "delete"),
    ("compression.type", "none"),
    ("delete.retention.ms", "86400000"),
    ("max.message.bytes", "1048576"),
    ("min.compaction.lag.ms", "0"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
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
            "invalid {what} '{name}': use 1 to 249 characters of [a-zA-Z0-9._-], not '.' or '..'"
        )));
    }
    Ok(())
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
                "invalid value '{value}' for topic config '{key}': expected {expected}"
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
            "min.compaction.lag.ms" => {
                let n: i64 = value.parse().map_err(|_| bad("an integer"))?;
                if n < 0 {
                    return Err(bad("0 or more"));
                }
            }
            _ => {
                let known: Vec<&str> = TOPIC_CONFIG_DEFAULTS.iter().map(|(k, _)| *k).collect();
                return Err(Error::InvalidArgument(format!(
                    "unknown topic config '{key}'; known keys: {}",
                    known.join(", ")
                )));
            }
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
            ("nope", "1"),
        ] {
            let given = BTreeMap::from([(k.to_string(), v.to_string())]);
            let err = resolve_config(&given).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
