//! What each API needs: the one table that maps every gRPC RPC and every Kafka API to
//! the operations on the resources it touches. docs/OPERATIONS.md shows the same table
//! (a unit test keeps them equal). APIs not listed (ApiVersions, SASL, health) need no
//! ACL; an API that touches several resources needs each row's operation on each.

use strata_metastore::{AclOperation, ResourceType};

use AclOperation::*;
use ResourceType::*;

/// One row: `api` needs `operation` on each resource of `resource_type` it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// `Service.Rpc` (gRPC) or `kafka.ApiName`.
    pub api: &'static str,
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// The operation needed on it.
    pub operation: AclOperation,
    /// How the check is applied, when not simply "refused unless allowed".
    pub note: &'static str,
}

const fn row(
    api: &'static str,
    resource_type: ResourceType,
    operation: AclOperation,
    note: &'static str,
) -> Access {
    Access {
        api,
        resource_type,
        operation,
        note,
    }
}

/// Topics the caller may not describe are left out of the answer instead of refusing it.
pub const FILTERED: &str = "others left out";
/// Either row allows it.
pub const EITHER: &str = "or the row above";

/// The table.
pub static ACCESS: &[Access] = &[
    // gRPC: Admin
    row("Admin.CreateTopic", Cluster, Create, ""),
    row("Admin.CreateTopic", Topic, Create, EITHER),
    row("Admin.ListTopics", Topic, Describe, FILTERED),
    row("Admin.DescribeTopic", Topic, Describe, ""),
    row("Admin.DeleteTopic", Topic, Delete, ""),
    row("Admin.AlterTopicConfig", Topic, AlterConfigs, ""),
    row("Admin.AddPartitions", Topic, Alter, ""),
    row("Admin.DeleteRecords", Topic, Delete, ""),
    row("Admin.DescribeArchive", Topic, Describe, ""),
    // gRPC: Log
    row("Log.Produce", Topic, Write, ""),
    row("Log.ProduceSession", Topic, Write, ""),
    row("Log.Fetch", Topic, Read, ""),
    row("Log.Subscribe", Topic, Read, ""),
    row("Log.InitProducerId", Cluster, IdempotentWrite, ""),
    row(
        "Log.InitProducerId",
        Topic,
        Write,
        "on any topic; or the row above",
    ),
    row("Log.ListOffsets", Topic, Describe, ""),
    // gRPC: Cluster
    row("Cluster.Metadata", Topic, Describe, FILTERED),
    row("Cluster.AgentStats", Cluster, Describe, ""),
    row("Cluster.DescribeCompactors", Cluster, Describe, ""),
    // gRPC: Groups
    row("Groups.FindCoordinator", Group, Describe, ""),
    row("Groups.Heartbeat", Group, Read, ""),
    row(
        "Groups.Heartbeat",
        Topic,
        Describe,
        "each topic subscribed by name",
    ),
    row("Groups.CommitOffsets", Group, Read, ""),
    row("Groups.CommitOffsets", Topic, Read, ""),
    row("Groups.FetchOffsets", Group, Describe, ""),
    row("Groups.FetchOffsets", Topic, Describe, FILTERED),
    row("Groups.ListGroups", Group, Describe, FILTERED),
    row("Groups.DescribeGroup", Group, Describe, ""),
    row("Groups.ResetOffsets", Group, Read, ""),
    row("Groups.ResetOffsets", Topic, Read, ""),
    row("Groups.DeleteGroup", Group, Delete, ""),
    // gRPC: Transactions
    row("Transactions.InitTransactions", TransactionalId, Write, ""),
    row(
        "Transactions.AddPartitionsToTransaction",
        TransactionalId,
        Write,
        "",
    ),
    row("Transactions.AddPartitionsToTransaction", Topic, Write, ""),
    row(
        "Transactions.AddOffsetsToTransaction",
        TransactionalId,
        Write,
        "",
    ),
    row("Transactions.AddOffsetsToTransaction", Group, Read, ""),
    row("Transactions.EndTransaction", TransactionalId, Write, ""),
    row(
        "Transactions.ListTransactions",
        TransactionalId,
        Describe,
        FILTERED,
    ),
    row(
        "Transactions.DescribeTransaction",
        TransactionalId,
        Describe,
        "",
    ),
    row("Transactions.AbortTransaction", TransactionalId, Write, ""),
    row(
        "Transactions.WriteMarker",
        Cluster,
        ClusterAction,
        "agents only",
    ),
    // gRPC: Acls
    row("Acls.CreateAcls", Cluster, Alter, ""),
    row("Acls.DescribeAcls", Cluster, Describe, ""),
    row("Acls.DeleteAcls", Cluster, Alter, ""),
    // Kafka
    row("kafka.Produce", Topic, Write, ""),
    row(
        "kafka.Produce",
        TransactionalId,
        Write,
        "transactional batches",
    ),
    row("kafka.Fetch", Topic, Read, ""),
    row("kafka.ListOffsets", Topic, Describe, ""),
    row("kafka.Metadata", Topic, Describe, FILTERED),
    row("kafka.OffsetForLeaderEpoch", Topic, Describe, ""),
    row(
        "kafka.InitProducerId",
        TransactionalId,
        Write,
        "with a transactional id",
    ),
    row(
        "kafka.InitProducerId",
        Cluster,
        IdempotentWrite,
        "without one",
    ),
    row(
        "kafka.InitProducerId",
        Topic,
        Write,
        "without one: on any topic; or the row above",
    ),
    row("kafka.AddPartitionsToTxn", TransactionalId, Write, ""),
    row("kafka.AddPartitionsToTxn", Topic, Write, ""),
    row("kafka.AddOffsetsToTxn", TransactionalId, Write, ""),
    row("kafka.AddOffsetsToTxn", Group, Read, ""),
    row("kafka.TxnOffsetCommit", TransactionalId, Write, ""),
    row("kafka.TxnOffsetCommit", Group, Read, ""),
    row("kafka.TxnOffsetCommit", Topic, Read, ""),
    row("kafka.EndTxn", TransactionalId, Write, ""),
    row("kafka.DescribeTransactions", TransactionalId, Describe, ""),
    row(
        "kafka.ListTransactions",
        TransactionalId,
        Describe,
        FILTERED,
    ),
    row("kafka.CreateTopics", Cluster, Create, ""),
    row("kafka.CreateTopics", Topic, Create, EITHER),
    row("kafka.DeleteTopics", Topic, Delete, ""),
    row("kafka.CreatePartitions", Topic, Alter, ""),
    row("kafka.DescribeConfigs", Topic, DescribeConfigs, ""),
    row(
        "kafka.DescribeConfigs",
        Cluster,
        DescribeConfigs,
        "broker configs",
    ),
    row("kafka.AlterConfigs", Topic, AlterConfigs, ""),
    row("kafka.IncrementalAlterConfigs", Topic, AlterConfigs, ""),
    row("kafka.DeleteRecords", Topic, Delete, ""),
    row("kafka.DescribeCluster", Cluster, Describe, ""),
    row("kafka.FindCoordinator", Group, Describe, "group keys"),
    row(
        "kafka.FindCoordinator",
        TransactionalId,
        Describe,
        "transactional id keys",
    ),
    row("kafka.JoinGroup", Group, Read, ""),
    row("kafka.SyncGroup", Group, Read, ""),
    row("kafka.Heartbeat", Group, Read, ""),
    row("kafka.LeaveGroup", Group, Read, ""),
    row("kafka.OffsetCommit", Group, Read, ""),
    row("kafka.OffsetCommit", Topic, Read, ""),
    row("kafka.OffsetFetch", Group, Describe, ""),
    row("kafka.OffsetFetch", Topic, Describe, FILTERED),
    row("kafka.ListGroups", Group, Describe, FILTERED),
    row("kafka.DescribeGroups", Group, Describe, ""),
    row("kafka.DeleteGroups", Group, Delete, ""),
    row("kafka.OffsetDelete", Group, Delete, ""),
    row("kafka.OffsetDelete", Topic, Read, ""),
    row("kafka.ConsumerGroupHeartbeat", Group, Read, ""),
    row(
        "kafka.ConsumerGroupHeartbeat",
        Topic,
        Describe,
        "each topic subscribed by name",
    ),
    row("kafka.ConsumerGroupDescribe", Group, Describe, ""),
    row("kafka.CreateAcls", Cluster, Alter, ""),
    row("kafka.DescribeAcls", Cluster, Describe, ""),
    row("kafka.DeleteAcls", Cluster, Alter, ""),
];

/// The operation `api` needs on resources of `resource_type`; `None` if the table has
/// no such row (a bug: every check names a row).
pub fn required(api: &str, resource_type: ResourceType) -> Option<AclOperation> {
    ACCESS
        .iter()
        .find(|a| a.api == api && a.resource_type == resource_type)
        .map(|a| a.operation)
}

/// Kafka's and the CLI's name of an operation (`WRITE`, `DESCRIBE_CONFIGS`).
pub fn operation_name(operation: AclOperation) -> &'static str {
    match operation {
        All => "ALL",
        Read => "READ",
        Write => "WRITE",
        Create => "CREATE",
        Delete => "DELETE",
        Alter => "ALTER",
        Describe => "DESCRIBE",
        DescribeConfigs => "DESCRIBE_CONFIGS",
        AlterConfigs => "ALTER_CONFIGS",
        IdempotentWrite => "IDEMPOTENT_WRITE",
        ClusterAction => "CLUSTER_ACTION",
    }
}

/// Kafka's and the CLI's name of a resource type (`TOPIC`, `TRANSACTIONAL_ID`).
pub fn resource_type_name(resource_type: ResourceType) -> &'static str {
    match resource_type {
        Topic => "TOPIC",
        Group => "GROUP",
        Cluster => "CLUSTER",
        TransactionalId => "TRANSACTIONAL_ID",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/OPERATIONS.md shows this table: each row as `| api | TYPE | OPERATION | note |`.
    #[test]
    fn the_operations_guide_shows_this_table() {
        let guide = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md"),
        )
        .unwrap();
        let shown: Vec<String> = guide
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter(|l| l.contains("` | "))
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = ACCESS
            .iter()
            .map(|a| {
                format!(
                    "| `{}` | {} | {} | {} |",
                    a.api,
                    resource_type_name(a.resource_type),
                    operation_name(a.operation),
                    a.note
                )
            })
            .collect();
        let missing: Vec<&String> = expected.iter().filter(|e| !shown.contains(e)).collect();
        assert!(
            missing.is_empty(),
            "docs/OPERATIONS.md's access table lacks these rows (or shows them otherwise):\n{}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let rows = guide
            .lines()
            .filter(|l| {
                l.starts_with("| `")
                    && (l.contains("` | TOPIC |")
                        || l.contains("` | GROUP |")
                        || l.contains("` | CLUSTER |")
                        || l.contains("` | TRANSACTIONAL_ID |"))
            })
            .count();
        assert_eq!(
            rows,
            ACCESS.len(),
            "docs/OPERATIONS.md's access table has rows the code lacks"
        );
    }

    #[test]
    fn every_api_resource_pair_is_one_row() {
        for (i, a) in ACCESS.iter().enumerate() {
            assert!(
                !ACCESS[..i]
                    .iter()
                    .any(|b| b.api == a.api && b.resource_type == a.resource_type),
                "{} on {:?} twice",
                a.api,
                a.resource_type
            );
        }
    }
}
