//! Kafka's ACL model, evaluated: which stored [`AclBinding`]s apply to a resource, and
//! whether they let a principal do an operation. Pure: the [`super::authorizer`] holds the
//! ACLs and calls this.
//!
//! The rules (Kafka's `StandardAuthorizer`):
//! - an ACL applies to a resource of its type when its pattern is literal and names the
//!   resource (or is `*`), or prefixed and the resource's name starts with it;
//! - to a principal when it names it or `User:*`; to a client address when it names it or
//!   `*`;
//! - a DENY of the operation (or of ALL) wins over every ALLOW;
//! - an ALLOW of the operation or of ALL allows it; so does an ALLOW of READ, WRITE,
//!   DELETE or ALTER for DESCRIBE, and an ALLOW of ALTER_CONFIGS for DESCRIBE_CONFIGS;
//! - nothing that applies: denied.

use strata_metastore::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};

/// Every principal, in an ACL.
pub const ANY_PRINCIPAL: &str = "User:*";

/// Every client address, in an ACL; every resource of a type, in a literal ACL.
pub const WILDCARD: &str = "*";

/// A resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resource<'a> {
    /// Its type.
    pub resource_type: ResourceType,
    /// Its name (`kafka-cluster` for the cluster).
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    /// The topic `name`.
    pub fn topic(name: &'a str) -> Self {
        Self {
            resource_type: ResourceType::Topic,
            name,
        }
    }

    /// The consumer group `id`.
    pub fn group(id: &'a str) -> Self {
        Self {
            resource_type: ResourceType::Group,
            name: id,
        }
    }

    /// The transactional id `id`.
    pub fn transactional_id(id: &'a str) -> Self {
        Self {
            resource_type: ResourceType::TransactionalId,
            name: id,
        }
    }

    /// The cluster.
    pub fn cluster() -> Self {
        Self {
            resource_type: ResourceType::Cluster,
            name: strata_metastore::CLUSTER_RESOURCE_NAME,
        }
    }
}

/// Whether `acl`'s pattern covers `resource`.
pub fn applies_to(acl: &AclBinding, resource: &Resource<'_>) -> bool {
    acl.resource_type == resource.resource_type
        && match acl.pattern_type {
            PatternType::Literal => {
                acl.resource_name == resource.name || acl.resource_name == WILDCARD
            }
            PatternType::Prefixed => resource.name.starts_with(&acl.resource_name),
        }
}

/// Whether `acl` is about `principal` connecting from `host`.
fn concerns(acl: &AclBinding, principal: &str, host: &str) -> bool {
    (acl.principal == principal || acl.principal == ANY_PRINCIPAL)
        && (acl.host == WILDCARD || acl.host == host)
}

/// Whether an ALLOW of `granted` allows `wanted`.
fn implies(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

/// What the ACLs say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An ALLOW applies and no DENY does.
    Allowed,
    /// This DENY applies.
    Denied(AclBinding),
    /// No ALLOW applies.
    NotAllowed,
}

/// Whether `acls` let `principal`, connecting from `host`, do `operation` on `resource`.
pub fn decide<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding>,
    principal: &str,
    host: &str,
    operation: AclOperation,
    resource: &Resource<'_>,
) -> Decision {
    let mut allowed = false;
    for acl in acls {
        if !applies_to(acl, resource) || !concerns(acl, principal, host) {
            continue;
        }
        match acl.permission {
            AclPermission::Deny
                if acl.operation == operation || acl.operation == AclOperation::All =>
            {
                return Decision::Denied(acl.clone());
            }
            AclPermission::Deny => {}
            AclPermission::Allow => allowed |= implies(acl.operation, operation),
        }
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::NotAllowed
    }
}

/// How a filter matches an ACL's pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern; the name, if given, equal.
    Any,
    /// The ACLs that apply to the resource the filter names (literal, `*`, prefixes of it).
    Match,
    /// This pattern type; the name, if given, equal.
    Exactly(PatternType),
}

/// Which ACLs an operator means (Kafka's ACL binding filter); `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    /// The resource type.
    pub resource_type: Option<ResourceType>,
    /// How the pattern matches.
    pub pattern: PatternFilter,
    /// The resource name.
    pub resource_name: Option<String>,
    /// The principal, as stored (`User:*` matches only ACLs for everyone).
    pub principal: Option<String>,
    /// The host, as stored.
    pub host: Option<String>,
    /// The operation.
    pub operation: Option<AclOperation>,
    /// The permission.
    pub permission: Option<AclPermission>,
}

impl AclFilter {
    /// The filter that matches every ACL.
    pub fn any() -> Self {
        Self {
            resource_type: None,
            pattern: PatternFilter::Any,
            resource_name: None,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether it matches `acl`.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let name = self.resource_name.as_deref();
        let pattern = match self.pattern {
            PatternFilter::Any => name.is_none_or(|n| n == acl.resource_name),
            PatternFilter::Exactly(kind) => {
                kind == acl.pattern_type && name.is_none_or(|n| n == acl.resource_name)
            }
            PatternFilter::Match => match (name, self.resource_type) {
                (Some(name), Some(resource_type)) => applies_to(
                    acl,
                    &Resource {
                        resource_type,
                        name,
                    },
                ),
                (Some(name), None) => applies_to(
                    acl,
                    &Resource {
                        resource_type: acl.resource_type,
                        name,
                    },
                ),
                (None, _) => true,
            },
        };
        pattern
            && self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.principal.as_deref().is_none_or(|p| p == acl.principal)
            && self.host.as_deref().is_none_or(|h| h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: &str,
        principal: &str,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            pattern_type,
            resource_name: name.to_string(),
            principal: principal.to_string(),
            host: WILDCARD.to_string(),
            operation,
            permission,
        }
    }

    fn allow_topic(pattern: PatternType, name: &str, operation: AclOperation) -> AclBinding {
        acl(
            ResourceType::Topic,
            pattern,
            name,
            "User:billing",
            operation,
            AclPermission::Allow,
        )
    }

    #[test]
    fn prefixed_literal_and_wildcard_patterns() {
        use AclOperation::*;
        let acls = [allow_topic(PatternType::Prefixed, "orders-", Write)];
        let may = |topic| {
            decide(
                &acls,
                "User:billing",
                "10.0.0.1",
                Write,
                &Resource::topic(topic),
            )
        };
        assert_eq!(may("orders-eu"), Decision::Allowed);
        assert_eq!(may("orders-"), Decision::Allowed);
        assert_eq!(may("payments"), Decision::NotAllowed);
        assert_eq!(may("orders"), Decision::NotAllowed);
        let literal = [allow_topic(PatternType::Literal, "orders", Read)];
        let read = |topic| decide(&literal, "User:billing", "h", Read, &Resource::topic(topic));
        assert_eq!(read("orders"), Decision::Allowed);
        assert_eq!(read("orders-eu"), Decision::NotAllowed);
        let every = [allow_topic(PatternType::Literal, "*", Read)];
        assert_eq!(
            decide(&every, "User:billing", "h", Read, &Resource::topic("x")),
            Decision::Allowed
        );
        // A prefixed `*` is a name starting with `*`, not a wildcard.
        let star = [allow_topic(PatternType::Prefixed, "*", Read)];
        assert_eq!(
            decide(&star, "User:billing", "h", Read, &Resource::topic("x")),
            Decision::NotAllowed
        );
        // Another resource type of the same name is another resource.
        assert_eq!(
            decide(
                &literal,
                "User:billing",
                "h",
                Read,
                &Resource::group("orders")
            ),
            Decision::NotAllowed
        );
    }

    #[test]
    fn deny_wins_and_implications() {
        use AclOperation::*;
        let mut acls = vec![
            allow_topic(PatternType::Prefixed, "orders-", All),
            acl(
                ResourceType::Topic,
                PatternType::Literal,
                "orders-secret",
                ANY_PRINCIPAL,
                Read,
                AclPermission::Deny,
            ),
        ];
        let may = |acls: &[AclBinding], operation, topic| {
            decide(
                acls,
                "User:billing",
                "h",
                operation,
                &Resource::topic(topic),
            )
        };
        assert_eq!(may(&acls, Read, "orders-eu"), Decision::Allowed);
        assert!(matches!(
            may(&acls, Read, "orders-secret"),
            Decision::Denied(_)
        ));
        // Denying READ does not deny DESCRIBE or WRITE.
        assert_eq!(may(&acls, Describe, "orders-secret"), Decision::Allowed);
        assert_eq!(may(&acls, Write, "orders-secret"), Decision::Allowed);
        acls.push(acl(
            ResourceType::Topic,
            PatternType::Literal,
            "orders-secret",
            "User:billing",
            All,
            AclPermission::Deny,
        ));
        assert!(matches!(
            may(&acls, Describe, "orders-secret"),
            Decision::Denied(_)
        ));
        // READ, WRITE, DELETE, ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS;
        // nothing implies WRITE but WRITE and ALL.
        for (granted, wanted, allowed) in [
            (Read, Describe, true),
            (Write, Describe, true),
            (Delete, Describe, true),
            (Alter, Describe, true),
            (Create, Describe, false),
            (AlterConfigs, DescribeConfigs, true),
            (DescribeConfigs, AlterConfigs, false),
            (Describe, Read, false),
            (Read, Write, false),
        ] {
            let acls = [allow_topic(PatternType::Literal, "t", granted)];
            assert_eq!(
                may(&acls, wanted, "t") == Decision::Allowed,
                allowed,
                "{granted:?} for {wanted:?}"
            );
        }
    }

    #[test]
    fn principals_and_hosts() {
        use AclOperation::*;
        let mut everyone = allow_topic(PatternType::Literal, "t", Read);
        everyone.principal = ANY_PRINCIPAL.to_string();
        let mut from_one_host = allow_topic(PatternType::Literal, "u", Read);
        from_one_host.host = "10.0.0.1".to_string();
        let acls = [everyone, from_one_host];
        let t = Resource::topic("t");
        let u = Resource::topic("u");
        assert_eq!(
            decide(&acls, "User:anyone", "h", Read, &t),
            Decision::Allowed
        );
        assert_eq!(
            decide(&acls, "User:billing", "10.0.0.1", Read, &u),
            Decision::Allowed
        );
        assert_eq!(
            decide(&acls, "User:billing", "10.0.0.2", Read, &u),
            Decision::NotAllowed
        );
        assert_eq!(
            decide(&acls, "User:other", "10.0.0.1", Read, &u),
            Decision::NotAllowed
        );
        assert_eq!(
            decide(&[], "User:billing", "h", Read, &t),
            Decision::NotAllowed
        );
    }

    #[test]
    fn filters() {
        use AclOperation::*;
        let prefixed = allow_topic(PatternType::Prefixed, "orders-", Write);
        let literal = allow_topic(PatternType::Literal, "orders-eu", Read);
        let wildcard = allow_topic(PatternType::Literal, "*", Describe);
        let other = allow_topic(PatternType::Literal, "payments", Read);
        let all = [&prefixed, &literal, &wildcard, &other];
        let matching = |filter: &AclFilter| -> Vec<&AclBinding> {
            all.iter().copied().filter(|a| filter.matches(a)).collect()
        };
        assert_eq!(matching(&AclFilter::any()).len(), 4);
        let mut applying = AclFilter::any();
        applying.resource_type = Some(ResourceType::Topic);
        applying.pattern = PatternFilter::Match;
        applying.resource_name = Some("orders-eu".to_string());
        assert_eq!(matching(&applying), vec![&prefixed, &literal, &wildcard]);
        let mut exact = AclFilter::any();
        exact.pattern = PatternFilter::Exactly(PatternType::Prefixed);
        assert_eq!(matching(&exact), vec![&prefixed]);
        let mut by_name = AclFilter::any();
        by_name.resource_name = Some("payments".to_string());
        assert_eq!(matching(&by_name), vec![&other]);
        let mut by_operation = AclFilter::any();
        by_operation.operation = Some(Read);
        by_operation.principal = Some("User:billing".to_string());
        assert_eq!(matching(&by_operation), vec![&literal, &other]);
        let mut groups = AclFilter::any();
        groups.resource_type = Some(ResourceType::Group);
        assert!(matching(&groups).is_empty());
    }
}
