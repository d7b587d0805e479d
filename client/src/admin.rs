//! Topic administration and cluster metadata.

use std::collections::HashMap;

use crate::{Connection, Transport};
use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::cluster_client::ClusterClient;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::log_client::LogClient;

use crate::{MAX_MESSAGE_BYTES, Result};

/// Admin operations against one agent.
#[derive(Debug, Clone)]
pub struct Admin {
    admin: AdminClient<Transport>,
    log: LogClient<Transport>,
    cluster: ClusterClient<Transport>,
    groups: GroupsClient<Transport>,
}

/// Where [`Admin::reset_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
    /// This offset (clamped to the readable range).
    Offset(i64),
    /// The first record at or after this time, ms since the Unix epoch.
    Timestamp(i64),
}

impl Admin {
    /// Admin over an open connection.
    pub fn new(connection: Connection) -> Self {
        let channel = connection.transport();
        Self {
            admin: AdminClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            log: LogClient::new(channel.clone()),
            cluster: ClusterClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            groups: GroupsClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// Connects to `server` and returns its admin.
    pub async fn connect(server: &str) -> Result<Self> {
        Ok(Self::new(crate::connect(server).await?))
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: HashMap<String, String>,
    ) -> Result<pb::TopicInfo> {
        let response = self
            .admin
            .clone()
            .create_topic(pb::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                config,
            })
            .await?;
        Ok(response.into_inner().topic.unwrap_or_default())
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<pb::TopicInfo>> {
        let response = self
            .admin
            .clone()
            .list_topics(pb::ListTopicsRequest {})
            .await?;
        Ok(response.into_inner().topics)
    }

    /// A topic and its partitions.
    pub async fn describe_topic(&self, name: &str) -> Result<pb::DescribeTopicResponse> {
        self.describe(name, false).await
    }

    /// [`Admin::describe_topic`] with each partition's stored bytes, summed from its
    /// index by the agent (a metastore read per 1,000 index entries of every partition).
    pub async fn describe_topic_with_bytes(&self, name: &str) -> Result<pb::DescribeTopicResponse> {
        self.describe(name, true).await
    }

    async fn describe(
        &self,
        name: &str,
        include_stored_bytes: bool,
    ) -> Result<pb::DescribeTopicResponse> {
        let response = self
            .admin
            .clone()
            .describe_topic(pb::DescribeTopicRequest {
                name: name.to_string(),
                include_stored_bytes,
            })
            .await?;
        Ok(response.into_inner())
    }

    /// How far a topic is archived as Parquet, per partition.
    pub async fn describe_archive(&self, topic: &str) -> Result<pb::DescribeArchiveResponse> {
        let response = self
            .admin
            .clone()
            .describe_archive(pb::DescribeArchiveRequest {
                topic: topic.to_string(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Kafka's ListOffsets: per partition (all if `partitions` is empty), the offset
    /// `spec` names, and its record's timestamp (`offset` -1: no record qualifies).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: Vec<i32>,
        spec: pb::list_offsets_request::Spec,
    ) -> Result<Vec<pb::PartitionOffsetAt>> {
        let response = self
            .log
            .clone()
            .list_offsets(pb::ListOffsetsRequest {
                topic: topic.to_string(),
                partitions,
                spec: Some(spec),
            })
            .await?;
        Ok(response.into_inner().offsets)
    }

    /// Grows a topic to `to` partitions.
    pub async fn add_partitions(&self, name: &str, to: i32) -> Result<pb::TopicInfo> {
        let response = self
            .admin
            .clone()
            .add_partitions(pb::AddPartitionsRequest {
                name: name.to_string(),
                to,
            })
            .await?;
        Ok(response.into_inner().topic.unwrap_or_default())
    }

    /// Sets and deletes config keys of a topic (deleted keys go back to their defaults).
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: HashMap<String, String>,
        delete: Vec<String>,
    ) -> Result<pb::TopicInfo> {
        let response = self
            .admin
            .clone()
            .alter_topic_config(pb::AlterTopicConfigRequest {
                name: name.to_string(),
                set,
                delete,
            })
            .await?;
        Ok(response.into_inner().topic.unwrap_or_default())
    }

    /// Deletes a partition's records below `before` (-1: all of them); the log start
    /// afterwards.
    pub async fn delete_records(&self, topic: &str, partition: u32, before: i64) -> Result<i64> {
        let response = self
            .admin
            .clone()
            .delete_records(pb::DeleteRecordsRequest {
                topic: topic.to_string(),
                partition: partition as i32,
                before_offset: before,
            })
            .await?;
        Ok(response.into_inner().log_start_offset)
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.admin
            .clone()
            .delete_topic(pb::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Agents and partition owners of `topics` (all if empty).
    pub async fn metadata(&self, topics: Vec<String>) -> Result<pb::MetadataResponse> {
        let response = self
            .cluster
            .clone()
            .metadata(pb::MetadataRequest {
                topics,
                named_only: false,
            })
            .await?;
        Ok(response.into_inner())
    }

    /// The answering agent's counters.
    pub async fn agent_stats(&self) -> Result<pb::AgentStatsResponse> {
        let response = self
            .cluster
            .clone()
            .agent_stats(pb::AgentStatsRequest {})
            .await?;
        Ok(response.into_inner())
    }

    /// The compactors running now and the jobs they hold.
    pub async fn describe_compactors(&self) -> Result<pb::DescribeCompactorsResponse> {
        let response = self
            .cluster
            .clone()
            .describe_compactors(pb::DescribeCompactorsRequest {})
            .await?;
        Ok(response.into_inner())
    }

    /// Every consumer group.
    pub async fn list_groups(&self) -> Result<Vec<pb::GroupSummary>> {
        let response = self
            .groups
            .clone()
            .list_groups(pb::ListGroupsRequest {})
            .await?;
        Ok(response.into_inner().groups)
    }

    /// A group's members, assignment, committed offsets and lag.
    pub async fn describe_group(&self, group_id: &str) -> Result<pb::DescribeGroupResponse> {
        let response = self
            .groups
            .clone()
            .describe_group(pb::DescribeGroupRequest {
                group_id: group_id.to_string(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Moves a group's committed offsets of `topic` (the group must have no members);
    /// returns the new offsets.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<pb::PartitionOffset>> {
        use pb::reset_offsets_request::To;
        let to = match to {
            ResetTo::Earliest => To::Earliest(true),
            ResetTo::Latest => To::Latest(true),
            ResetTo::Offset(offset) => To::Offset(offset),
            ResetTo::Timestamp(ms) => To::TimestampMs(ms),
        };
        let response = self
            .groups
            .clone()
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: group_id.to_string(),
                topic: topic.to_string(),
                to: Some(to),
            })
            .await?;
        Ok(response.into_inner().offsets)
    }

    /// Deletes a group and its committed offsets (the group must have no members).
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        self.groups
            .clone()
            .delete_group(pb::DeleteGroupRequest {
                group_id: group_id.to_string(),
            })
            .await?;
        Ok(())
    }

    /// A group's committed offsets (all topics when `topics` is empty).
    pub async fn committed_offsets(
        &self,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Vec<pb::PartitionOffset>> {
        let response = self
            .groups
            .clone()
            .fetch_offsets(pb::FetchOffsetsRequest {
                group_id: group_id.to_string(),
                topics: topics.iter().map(|t| t.to_string()).collect(),
            })
            .await?;
        Ok(response.into_inner().offsets)
    }
}
