//! Managing ACLs: the operations behind gRPC's `Acls` service, Kafka's CreateAcls,
//! DescribeAcls and DeleteAcls, and `strata acl`. Each stores in the metastore (every
//! agent's authorizer follows it) and then re-reads the ACLs here, so that the agent that
//! answered already applies the change. Callers authorize first (ALTER or DESCRIBE on the
//! cluster).

use std::net::IpAddr;

use strata_metastore::{AclBinding, PatternType, ResourceType};

use super::acl::{AclFilter, WILDCARD};
use super::principal::{MAX_NAME_LEN, Principal};
use crate::{Agent, Error, Result};

/// Most ACLs one request creates, or filters one request deletes by.
pub const MAX_ACLS_PER_REQUEST: usize = 100;

/// Checks `acl` and returns it as stored: the principal as `User:<name>`, the host `*`
/// when empty.
pub fn validated(mut acl: AclBinding) -> std::result::Result<AclBinding, String> {
    if acl.resource_name.is_empty() || acl.resource_name.len() > MAX_NAME_LEN {
        return Err(format!(
            "an ACL's resource name must be 1 to {MAX_NAME_LEN} bytes (or `*`)"
        ));
    }
    if acl.resource_type == ResourceType::Cluster
        && (acl.resource_name != strata_metastore::CLUSTER_RESOURCE_NAME
            || acl.pattern_type != PatternType::Literal)
    {
        return Err(format!(
            "the cluster resource is named '{}' (literal)",
            strata_metastore::CLUSTER_RESOURCE_NAME
        ));
    }
    acl.principal = match Principal::parse(&acl.principal) {
        Some(principal) => principal.as_str().to_string(),
        None => {
            return Err(format!(
                "'{}' is not a principal: use User:<name>, or User:* for everyone",
                acl.principal
            ));
        }
    };
    if acl.host.is_empty() {
        acl.host = WILDCARD.to_string();
    }
    if acl.host != WILDCARD && acl.host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "'{}' is not a host: use a client's IP address, or * for any",
            acl.host
        ));
    }
    Ok(acl)
}

impl Agent {
    /// Stores `acls` (see the module doc). Every one is checked before any is stored.
    pub async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<()> {
        if acls.len() > MAX_ACLS_PER_REQUEST {
            return Err(Error::InvalidArgument(format!(
                "{} ACLs in one request; at most {MAX_ACLS_PER_REQUEST}",
                acls.len()
            )));
        }
        let acls = acls
            .into_iter()
            .map(validated)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::InvalidArgument)?;
        self.inner.metastore.create_acls(&acls).await?;
        tracing::info!(count = acls.len(), "ACLs created");
        self.reload_acls().await;
        Ok(())
    }

    /// The stored ACLs `filter` matches, read from the metastore.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let mut acls: Vec<AclBinding> = self
            .inner
            .metastore
            .acls()
            .await?
            .into_iter()
            .filter(|acl| filter.matches(acl))
            .collect();
        acls.sort();
        Ok(acls)
    }

    /// Deletes the stored ACLs any of `filters` matches; returns them, per filter.
    pub async fn delete_acls(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>> {
        if filters.len() > MAX_ACLS_PER_REQUEST {
            return Err(Error::InvalidArgument(format!(
                "{} filters in one request; at most {MAX_ACLS_PER_REQUEST}",
                filters.len()
            )));
        }
        let stored = self.inner.metastore.acls().await?;
        let matched: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|filter| {
                stored
                    .iter()
                    .filter(|a| filter.matches(a))
                    .cloned()
                    .collect()
            })
            .collect();
        let all: Vec<AclBinding> = matched.iter().flatten().cloned().collect();
        let deleted = self.inner.metastore.delete_acls(&all).await?;
        tracing::info!(count = deleted.len(), "ACLs deleted");
        self.reload_acls().await;
        // An ACL two filters match is reported by the first.
        let mut reported = std::collections::BTreeSet::new();
        Ok(matched
            .into_iter()
            .map(|acls| {
                acls.into_iter()
                    .filter(|a| deleted.contains(a) && reported.insert(a.clone()))
                    .collect()
            })
            .collect())
    }

    /// Re-reads the ACLs now (the watch follows too; this makes this agent's own change
    /// apply to its next request).
    async fn reload_acls(&self) {
        if self.inner.authorizer.enabled()
            && let Err(e) = self
                .inner
                .authorizer
                .reload(self.inner.metastore.as_ref())
                .await
        {
            tracing::warn!(error = %e, "cannot re-read the ACLs; the watch will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_metastore::{AclOperation, AclPermission};

    fn acl(resource_type: ResourceType, name: &str, principal: &str, host: &str) -> AclBinding {
        AclBinding {
            resource_type,
            pattern_type: PatternType::Literal,
            resource_name: name.to_string(),
            principal: principal.to_string(),
            host: host.to_string(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn validates_and_normalizes() {
        let good = validated(acl(ResourceType::Topic, "t", "billing", "")).unwrap();
        assert_eq!(good.principal, "User:billing");
        assert_eq!(good.host, "*");
        assert!(validated(acl(ResourceType::Topic, "t", "User:*", "10.0.0.1")).is_ok());
        assert!(validated(acl(ResourceType::Topic, "t", "Group:x", "*")).is_err());
        assert!(validated(acl(ResourceType::Topic, "", "billing", "*")).is_err());
        assert!(validated(acl(ResourceType::Topic, "t", "billing", "example.com")).is_err());
        assert!(validated(acl(ResourceType::Cluster, "kafka-cluster", "billing", "*")).is_ok());
        assert!(validated(acl(ResourceType::Cluster, "other", "billing", "*")).is_err());
    }
}
