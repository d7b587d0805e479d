//! Topic administration and cluster metadata.

use std::collections::HashMap;

use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

use crate::{MAX_MESSAGE_BYTES, Result};

/// Admin operations against one agent.
#[derive(Debug, Clone)]
pub struct Admin {
    admin: AdminClient<Channel>,
    cluster: ClusterClient<Channel>,
}

impl Admin {
    /// Admin over an open channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            admin: AdminClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            cluster: ClusterClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
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
        let response = self
            .admin
            .clone()
            .describe_topic(pb::DescribeTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(response.into_inner())
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
            .metadata(pb::MetadataRequest { topics })
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
}
