//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs, DeleteRecords — each onto the agent operation
//! `strata topic` uses, with Kafka's error codes for what the agent refuses.
//!
//! Replication is the object store's: a replication factor is accepted (-1 or more) and
//! answered as 1, and a replica assignment is refused (the controller places partitions).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::alter_configs_request::AlterConfigsRequest;
use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse as IncrementalResourceResponse, IncrementalAlterConfigsResponse,
};
use strata_agent::Error;
use strata_agent::topic::{TOPIC_CONFIG_DEFAULTS, overridden, resolve_config, validate_name};

use strata_agent::auth::Resource;

use super::metadata::topic_uuid;
use super::{Context, str_bytes};
use crate::error::Context as ErrorContext;

/// Partitions of a topic created without a count (Kafka's `num.partitions` default).
pub const DEFAULT_PARTITIONS: i32 = 1;

/// Kafka's resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// A refusal: the code and the message that says what to fix.
type Refusal = (ResponseError, String);

fn refusal(cx: &Context<'_>, error: &Error, context: ErrorContext) -> (i16, String) {
    (cx.agent_error(error, context), crate::error::message(error))
}

/// Refuses unless the caller may call this API on `resource`.
fn authorized(cx: &Context<'_>, resource: Resource<'_>) -> Result<(), (i16, String)> {
    cx.authorize(resource)
        .map_err(|refusal| (cx.error(refusal.error), refusal.message))
}

/// A config error of the agent (a bad key or value) as INVALID_CONFIG.
fn config_refusal(cx: &Context<'_>, error: &Error) -> (i16, String) {
    match error {
        Error::InvalidArgument(message) => {
            (cx.error(ResponseError::InvalidConfig), message.clone())
        }
        other => refusal(cx, other, ErrorContext::Admin),
    }
}

/// CreateTopics.
pub(crate) async fn create_topics(cx: &Context<'_>, request: CreateTopicsRequest) -> ResponseKind {
    let v = cx.version;
    let agent = &cx.shared.agent;
    let mut response = CreateTopicsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        let partitions = if topic.num_partitions == -1 {
            DEFAULT_PARTITIONS
        } else {
            topic.num_partitions
        };
        let config: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        // CREATE on the cluster, or else on the topic.
        let allowed = if cx.permits(Resource::cluster()) {
            Ok(())
        } else {
            authorized(cx, Resource::topic(&name))
        };
        let checked: Result<(), Refusal> = (|| {
            validate_name(&name)
                .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
            if partitions < 1 {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("{partitions} partitions: a topic needs at least 1"),
                ));
            }
            if topic.replication_factor == 0 || topic.replication_factor < -1 {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {}: give -1 or 1 or more (the object store \
                         replicates; every value means the same)",
                        topic.replication_factor
                    ),
                ));
            }
            if !topic.assignments.is_empty() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "a replica assignment cannot be given: the controller places partitions"
                        .to_string(),
                ));
            }
            resolve_config(&config).map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
            Ok(())
        })();
        let outcome =
            match allowed.and(checked.map_err(|(error, message)| (cx.error(error), message))) {
                Err(refused) => Err(refused),
                Ok(()) if request.validate_only => match agent.list_topics().await {
                    Ok(topics) if topics.iter().any(|t| t.name == name) => Err((
                        cx.error(ResponseError::TopicAlreadyExists),
                        format!("topic '{name}' already exists"),
                    )),
                    Ok(_) => resolve_config(&config)
                        .map(|config| (uuid::Uuid::nil(), config))
                        .map_err(|e| config_refusal(cx, &e)),
                    Err(e) => Err(refusal(cx, &e, ErrorContext::Admin)),
                },
                Ok(()) => agent
                    .create_topic(&name, partitions, &config)
                    .await
                    .map(|meta| (topic_uuid(&meta.topic_id), meta.config))
                    .map_err(|e| refusal(cx, &e, ErrorContext::Admin)),
            };
        match outcome {
            Ok((id, config)) => {
                if v >= 7 {
                    result.topic_id = id;
                }
                if v >= 5 {
                    result.num_partitions = partitions;
                    result.replication_factor = 1;
                    let overrides = overridden(&config);
                    result.configs = Some(
                        config
                            .iter()
                            .map(|(key, value)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(key);
                                c.value = Some(str_bytes(value));
                                c.config_source = if overrides.contains(key) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err((code, message)) => {
                result.error_code = code;
                if v >= 1 {
                    result.error_message = Some(str_bytes(message));
                }
                if v >= 5 {
                    result.num_partitions = -1;
                    result.replication_factor = -1;
                }
            }
        }
        response.topics.push(result);
    }
    ResponseKind::CreateTopics(response)
}

/// DeleteTopics, by name or (v6) by id.
pub(crate) async fn delete_topics(cx: &Context<'_>, request: DeleteTopicsRequest) -> ResponseKind {
    let v = cx.version;
    let agent = &cx.shared.agent;
    let mut response = DeleteTopicsResponse::default();
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if v >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    for (name, id) in wanted {
        let mut result = DeletableTopicResult::default();
        let name = match name {
            Some(name) => Some(name),
            None => agent.list_topics().await.ok().and_then(|topics| {
                topics
                    .into_iter()
                    .find(|t| !id.is_nil() && topic_uuid(&t.topic_id) == id)
                    .map(|t| t.name)
            }),
        };
        if v >= 6 {
            result.topic_id = id;
        }
        match name {
            None => result.error_code = cx.error(ResponseError::UnknownTopicId),
            Some(name) => {
                result.name = Some(TopicName(str_bytes(&name)));
                let deleted = match authorized(cx, Resource::topic(&name)) {
                    Ok(()) => agent
                        .delete_topic(&name)
                        .await
                        .map_err(|e| refusal(cx, &e, ErrorContext::Admin)),
                    Err(refused) => Err(refused),
                };
                if let Err((code, message)) = deleted {
                    result.error_code = code;
                    if v >= 5 {
                        result.error_message = Some(str_bytes(message));
                    }
                }
            }
        }
        response.responses.push(result);
    }
    ResponseKind::DeleteTopics(response)
}

/// CreatePartitions: grows topics (never shrinks them).
pub(crate) async fn create_partitions(
    cx: &Context<'_>,
    request: CreatePartitionsRequest,
) -> ResponseKind {
    let agent = &cx.shared.agent;
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let outcome: Result<(), (i16, String)> = async {
            authorized(cx, Resource::topic(&name))?;
            if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err((
                    cx.error(ResponseError::InvalidReplicaAssignment),
                    "a replica assignment cannot be given: the controller places partitions"
                        .to_string(),
                ));
            }
            let (meta, _) = agent
                .describe_topic(&name)
                .await
                .map_err(|e| refusal(cx, &e, ErrorContext::Admin))?;
            if i64::from(topic.count) <= i64::from(meta.partitions) {
                return Err((
                    cx.error(ResponseError::InvalidPartitions),
                    format!(
                        "topic '{name}' has {} partitions; a topic only grows: ask for more",
                        meta.partitions
                    ),
                ));
            }
            if request.validate_only {
                return Ok(());
            }
            agent
                .add_partitions(&name, topic.count)
                .await
                .map(|_| ())
                .map_err(|e| refusal(cx, &e, ErrorContext::Admin))
        }
        .await;
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = Some(str_bytes(message));
        }
        response.results.push(result);
    }
    ResponseKind::CreatePartitions(response)
}

/// Kafka's type of a topic config (DescribeConfigs v3+): 1 boolean, 2 string, 3 int,
/// 5 long, 7 list.
fn config_type(key: &str) -> i8 {
    match key {
        "archive.enabled" => 1,
        "cleanup.policy" => 7,
        "compression.type" | "message.timestamp.type" => 2,
        "max.message.bytes" => 3,
        _ => 5,
    }
}

/// DescribeConfigs: a topic's every key, with its value and whether it is the default
/// or set on the topic; a broker's: none (agents are configured by flags and files).
pub(crate) async fn describe_configs(
    cx: &Context<'_>,
    request: DescribeConfigsRequest,
) -> ResponseKind {
    let v = cx.version;
    let agent = &cx.shared.agent;
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let subject = if resource.resource_type == RESOURCE_TOPIC {
            Resource::topic(resource.resource_name.as_str())
        } else {
            Resource::cluster()
        };
        if matches!(resource.resource_type, RESOURCE_TOPIC | RESOURCE_BROKER)
            && let Err((code, message)) = authorized(cx, subject)
        {
            result.error_code = code;
            result.error_message = Some(str_bytes(message));
            response.results.push(result);
            continue;
        }
        match resource.resource_type {
            RESOURCE_TOPIC => match agent.describe_topic(resource.resource_name.as_str()).await {
                Ok((meta, _)) => {
                    let overrides = overridden(&meta.config);
                    let keys: Option<Vec<String>> = resource
                        .configuration_keys
                        .map(|keys| keys.iter().map(|k| k.to_string()).collect());
                    for (key, value) in &meta.config {
                        if keys.as_ref().is_some_and(|keys| !keys.contains(key)) {
                            continue;
                        }
                        let source = if overrides.contains(key) {
                            SOURCE_TOPIC
                        } else {
                            SOURCE_DEFAULT
                        };
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = str_bytes(key);
                        c.value = Some(str_bytes(value));
                        c.config_source = source;
                        if request.include_synonyms {
                            let mut synonym = DescribeConfigsSynonym::default();
                            synonym.name = str_bytes(key);
                            synonym.value = Some(str_bytes(value));
                            synonym.source = source;
                            c.synonyms.push(synonym);
                            if source == SOURCE_TOPIC
                                && let Some((_, default)) =
                                    TOPIC_CONFIG_DEFAULTS.iter().find(|(k, _)| k == key)
                            {
                                let mut synonym = DescribeConfigsSynonym::default();
                                synonym.name = str_bytes(key);
                                synonym.value = Some(str_bytes(*default));
                                synonym.source = SOURCE_DEFAULT;
                                c.synonyms.push(synonym);
                            }
                        }
                        if v >= 3 {
                            c.config_type = config_type(key);
                        }
                        result.configs.push(c);
                    }
                }
                Err(e) => {
                    let (code, message) = refusal(cx, &e, ErrorContext::Other);
                    result.error_code = code;
                    result.error_message = Some(str_bytes(message));
                }
            },
            RESOURCE_BROKER => {}
            other => {
                result.error_code = cx.error(ResponseError::InvalidRequest);
                result.error_message = Some(str_bytes(format!(
                    "resource type {other}: only topics (2) and brokers (4) have configs here"
                )));
            }
        }
        response.results.push(result);
    }
    ResponseKind::DescribeConfigs(response)
}

/// Changes one topic's configs: `set` and `delete` as [`strata_agent::Agent::alter_topic_config`]
/// takes them (checked only, with `validate_only`).
async fn alter_topic(
    cx: &Context<'_>,
    resource_type: i8,
    name: &str,
    change: impl FnOnce(
        &BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, String>, Vec<String>), String>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            cx.error(ResponseError::InvalidRequest),
            format!(
                "resource type {resource_type}: only topic configs (2) can be changed; agents \
                 are configured by flags and files"
            ),
        ));
    }
    authorized(cx, Resource::topic(name))?;
    let agent = &cx.shared.agent;
    let (meta, _) = agent
        .describe_topic(name)
        .await
        .map_err(|e| refusal(cx, &e, ErrorContext::Admin))?;
    let (set, delete) = change(&meta.config)
        .map_err(|message| (cx.error(ResponseError::InvalidConfig), message))?;
    if validate_only {
        let mut given = meta.config.clone();
        for key in &delete {
            strata_agent::topic::check_config_key(key).map_err(|e| config_refusal(cx, &e))?;
            given.remove(key);
        }
        given.extend(set);
        return resolve_config(&given)
            .map(|_| ())
            .map_err(|e| config_refusal(cx, &e));
    }
    agent
        .alter_topic_config(name, &set, &delete)
        .await
        .map(|_| ())
        .map_err(|e| config_refusal(cx, &e))
}

/// AlterConfigs (the older API): the given configs replace the topic's; every key not
/// given goes back to its default.
pub(crate) async fn alter_configs(cx: &Context<'_>, request: AlterConfigsRequest) -> ResponseKind {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let given: BTreeMap<String, String> = resource
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let outcome = alter_topic(
            cx,
            resource.resource_type,
            resource.resource_name.as_str(),
            |current| {
                let delete = overridden(current)
                    .into_iter()
                    .filter(|k| !given.contains_key(k))
                    .collect();
                Ok((given.clone(), delete))
            },
            request.validate_only,
        )
        .await;
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name;
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = Some(str_bytes(message));
        }
        response.responses.push(result);
    }
    ResponseKind::AlterConfigs(response)
}

/// IncrementalAlterConfigs: SET, DELETE, and APPEND / SUBTRACT on list values
/// (`cleanup.policy`).
pub(crate) async fn incremental_alter_configs(
    cx: &Context<'_>,
    request: IncrementalAlterConfigsRequest,
) -> ResponseKind {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let outcome = alter_topic(
            cx,
            resource.resource_type,
            resource.resource_name.as_str(),
            |current| {
                let mut set = BTreeMap::new();
                let mut delete = Vec::new();
                for c in &resource.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let list = |k: &str| -> Vec<String> {
                        set.get(k)
                            .or(current.get(k))
                            .map(|v: &String| {
                                v.split(',')
                                    .filter(|s| !s.is_empty())
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    match (c.config_operation, value) {
                        (0, Some(value)) => {
                            set.insert(key, value);
                        }
                        (1, _) => delete.push(key),
                        (2, Some(value)) => {
                            let mut items = list(&key);
                            for item in value.split(',') {
                                if !items.iter().any(|i| i == item) {
                                    items.push(item.to_string());
                                }
                            }
                            set.insert(key, items.join(","));
                        }
                        (3, Some(value)) => {
                            let remove: Vec<&str> = value.split(',').collect();
                            let items: Vec<String> = list(&key)
                                .into_iter()
                                .filter(|i| !remove.contains(&i.as_str()))
                                .collect();
                            set.insert(key, items.join(","));
                        }
                        (op, _) => {
                            return Err(format!(
                                "config '{key}': operation {op} needs a value (0 SET, 1 DELETE, \
                                 2 APPEND, 3 SUBTRACT)"
                            ));
                        }
                    }
                }
                Ok((set, delete))
            },
            request.validate_only,
        )
        .await;
        let mut result = IncrementalResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name;
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = Some(str_bytes(message));
        }
        response.responses.push(result);
    }
    ResponseKind::IncrementalAlterConfigs(response)
}

/// DeleteRecords: moves each partition's log start (-1: to its high watermark).
pub(crate) async fn delete_records(
    cx: &Context<'_>,
    request: DeleteRecordsRequest,
) -> ResponseKind {
    let agent = &cx.shared.agent;
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = DeleteRecordsTopicResult::default();
        result.name = topic.name;
        let refused = cx.authorize(Resource::topic(&name)).err();
        for partition in topic.partitions {
            let mut p = DeleteRecordsPartitionResult::default();
            p.partition_index = partition.partition_index;
            if let Some(refusal) = &refused {
                p.error_code = cx.error(refusal.error);
                p.low_watermark = -1;
                result.partitions.push(p);
                continue;
            }
            match agent
                .delete_records(&name, partition.partition_index, partition.offset)
                .await
            {
                Ok(start) => p.low_watermark = start,
                Err(e) => {
                    p.error_code = cx.agent_error(&e, ErrorContext::Other);
                    p.low_watermark = -1;
                }
            }
            result.partitions.push(p);
        }
        response.topics.push(result);
    }
    ResponseKind::DeleteRecords(response)
}
