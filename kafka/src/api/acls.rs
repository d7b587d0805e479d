//! CreateAcls, DescribeAcls and DeleteAcls: Kafka's ACL administration (kafka-acls.sh,
//! AdminClient) onto the agent's ACL operations ([`strata_agent::auth::admin`]), the ones
//! `strata acl` and gRPC's `Acls` use. Kafka's codes for resource types, pattern types,
//! operations and permissions are translated here; a code Strata has no counterpart for
//! is refused (INVALID_REQUEST) with a message.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::create_acls_request::CreateAclsRequest;
use kafka_protocol::messages::create_acls_response::{AclCreationResult, CreateAclsResponse};
use kafka_protocol::messages::delete_acls_request::DeleteAclsRequest;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl, DeleteAclsResponse,
};
use kafka_protocol::messages::describe_acls_request::DescribeAclsRequest;
use kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource, DescribeAclsResponse,
};
use strata_agent::auth::admin::MAX_ACLS_PER_REQUEST;
use strata_agent::auth::{AclFilter, PatternFilter, Resource};
use strata_metastore::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};

use super::{Context, str_bytes};
use crate::error::Context as ErrorContext;

// Kafka's codes (org.apache.kafka.common.resource / acl).
const ANY: i8 = 1;

fn resource_type_from(code: i8) -> Result<Option<ResourceType>, String> {
    match code {
        ANY => Ok(None),
        2 => Ok(Some(ResourceType::Topic)),
        3 => Ok(Some(ResourceType::Group)),
        4 => Ok(Some(ResourceType::Cluster)),
        5 => Ok(Some(ResourceType::TransactionalId)),
        other => Err(format!(
            "resource type {other} is not one Strata has: use TOPIC (2), GROUP (3), CLUSTER \
             (4) or TRANSACTIONAL_ID (5)"
        )),
    }
}

fn resource_type_code(t: ResourceType) -> i8 {
    match t {
        ResourceType::Topic => 2,
        ResourceType::Group => 3,
        ResourceType::Cluster => 4,
        ResourceType::TransactionalId => 5,
    }
}

fn pattern_from(code: i8) -> Result<PatternFilter, String> {
    match code {
        ANY => Ok(PatternFilter::Any),
        2 => Ok(PatternFilter::Match),
        3 => Ok(PatternFilter::Exactly(PatternType::Literal)),
        4 => Ok(PatternFilter::Exactly(PatternType::Prefixed)),
        other => Err(format!(
            "pattern type {other} is not one Strata has: use LITERAL (3) or PREFIXED (4)"
        )),
    }
}

fn pattern_code(p: PatternType) -> i8 {
    match p {
        PatternType::Literal => 3,
        PatternType::Prefixed => 4,
    }
}

const OPERATIONS: [(i8, AclOperation); 11] = [
    (2, AclOperation::All),
    (3, AclOperation::Read),
    (4, AclOperation::Write),
    (5, AclOperation::Create),
    (6, AclOperation::Delete),
    (7, AclOperation::Alter),
    (8, AclOperation::Describe),
    (9, AclOperation::ClusterAction),
    (10, AclOperation::DescribeConfigs),
    (11, AclOperation::AlterConfigs),
    (12, AclOperation::IdempotentWrite),
];

fn operation_from(code: i8) -> Result<Option<AclOperation>, String> {
    if code == ANY {
        return Ok(None);
    }
    OPERATIONS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, o)| Some(*o))
        .ok_or_else(|| format!("operation {code} is not one Strata has (2 to 12)"))
}

fn operation_code(o: AclOperation) -> i8 {
    OPERATIONS
        .iter()
        .find(|(_, op)| *op == o)
        .map(|(c, _)| *c)
        .expect("every operation has a code")
}

fn permission_from(code: i8) -> Result<Option<AclPermission>, String> {
    match code {
        ANY => Ok(None),
        2 => Ok(Some(AclPermission::Deny)),
        3 => Ok(Some(AclPermission::Allow)),
        other => Err(format!(
            "permission {other} is not one Strata has: use DENY (2) or ALLOW (3)"
        )),
    }
}

fn permission_code(p: AclPermission) -> i8 {
    match p {
        AclPermission::Deny => 2,
        AclPermission::Allow => 3,
    }
}

/// A filter as Kafka sends it (DescribeAcls, DeleteAcls).
fn filter(
    resource_type: i8,
    name: Option<&str>,
    pattern_type: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    Ok(AclFilter {
        resource_type: resource_type_from(resource_type)?,
        pattern: pattern_from(pattern_type)?,
        resource_name: name.map(str::to_string),
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation: operation_from(operation)?,
        permission: permission_from(permission)?,
    })
}

/// CreateAcls: each creation checked, then all stored at once.
pub(crate) async fn create_acls(cx: &Context<'_>, request: CreateAclsRequest) -> ResponseKind {
    let mut response = CreateAclsResponse::default();
    let count = request.creations.len();
    let outcome: Result<(), (i16, String)> = async {
        cx.authorize(Resource::cluster())
            .map_err(|r| (cx.error(r.error), r.message))?;
        if count > MAX_ACLS_PER_REQUEST {
            return Err((
                cx.error(ResponseError::InvalidRequest),
                format!("{count} ACLs in one request; at most {MAX_ACLS_PER_REQUEST}"),
            ));
        }
        let acls = request
            .creations
            .iter()
            .map(|c| {
                let invalid = |m: String| (cx.error(ResponseError::InvalidRequest), m);
                let pattern = match pattern_from(c.resource_pattern_type).map_err(invalid)? {
                    PatternFilter::Exactly(p) => p,
                    _ => {
                        return Err(invalid(
                            "an ACL's pattern is LITERAL (3) or PREFIXED (4)".to_string(),
                        ));
                    }
                };
                Ok(AclBinding {
                    resource_type: resource_type_from(c.resource_type)
                        .map_err(invalid)?
                        .ok_or_else(|| invalid("an ACL needs a resource type".to_string()))?,
                    pattern_type: pattern,
                    resource_name: c.resource_name.to_string(),
                    principal: c.principal.to_string(),
                    host: c.host.to_string(),
                    operation: operation_from(c.operation)
                        .map_err(invalid)?
                        .ok_or_else(|| invalid("an ACL needs an operation".to_string()))?,
                    permission: permission_from(c.permission_type)
                        .map_err(invalid)?
                        .ok_or_else(|| invalid("an ACL needs a permission".to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        cx.shared.agent.create_acls(acls).await.map_err(|e| {
            (
                cx.agent_error(&e, ErrorContext::Other),
                crate::error::message(&e),
            )
        })
    }
    .await;
    response.results = (0..count)
        .map(|_| {
            let mut result = AclCreationResult::default();
            if let Err((code, message)) = &outcome {
                result.error_code = *code;
                result.error_message = Some(str_bytes(message.clone()));
            }
            result
        })
        .collect();
    ResponseKind::CreateAcls(response)
}

/// DescribeAcls: the ACLs one filter matches, grouped by resource pattern.
pub(crate) async fn describe_acls(cx: &Context<'_>, request: DescribeAclsRequest) -> ResponseKind {
    let mut response = DescribeAclsResponse::default();
    let outcome: Result<Vec<AclBinding>, (i16, String)> = async {
        cx.authorize(Resource::cluster())
            .map_err(|r| (cx.error(r.error), r.message))?;
        let filter = filter(
            request.resource_type_filter,
            request.resource_name_filter.as_deref(),
            request.pattern_type_filter,
            request.principal_filter.as_deref(),
            request.host_filter.as_deref(),
            request.operation,
            request.permission_type,
        )
        .map_err(|m| (cx.error(ResponseError::InvalidRequest), m))?;
        cx.shared.agent.describe_acls(&filter).await.map_err(|e| {
            (
                cx.agent_error(&e, ErrorContext::Other),
                crate::error::message(&e),
            )
        })
    }
    .await;
    match outcome {
        Ok(acls) => {
            for acl in acls {
                let key = (
                    resource_type_code(acl.resource_type),
                    acl.resource_name.clone(),
                    pattern_code(acl.pattern_type),
                );
                let mut description = AclDescription::default();
                description.principal = str_bytes(&acl.principal);
                description.host = str_bytes(&acl.host);
                description.operation = operation_code(acl.operation);
                description.permission_type = permission_code(acl.permission);
                match response
                    .resources
                    .iter_mut()
                    .find(|r| (r.resource_type, r.resource_name.to_string(), r.pattern_type) == key)
                {
                    Some(resource) => resource.acls.push(description),
                    None => {
                        let mut resource = DescribeAclsResource::default();
                        resource.resource_type = key.0;
                        resource.resource_name = str_bytes(key.1);
                        resource.pattern_type = key.2;
                        resource.acls.push(description);
                        response.resources.push(resource);
                    }
                }
            }
        }
        Err((code, message)) => {
            response.error_code = code;
            response.error_message = Some(str_bytes(message));
        }
    }
    ResponseKind::DescribeAcls(response)
}

/// DeleteAcls: the ACLs each filter matches, deleted, listed per filter.
pub(crate) async fn delete_acls(cx: &Context<'_>, request: DeleteAclsRequest) -> ResponseKind {
    let mut response = DeleteAclsResponse::default();
    let count = request.filters.len();
    let outcome: Result<Vec<Vec<AclBinding>>, (i16, String)> = async {
        cx.authorize(Resource::cluster())
            .map_err(|r| (cx.error(r.error), r.message))?;
        let filters = request
            .filters
            .iter()
            .map(|f| {
                filter(
                    f.resource_type_filter,
                    f.resource_name_filter.as_deref(),
                    f.pattern_type_filter,
                    f.principal_filter.as_deref(),
                    f.host_filter.as_deref(),
                    f.operation,
                    f.permission_type,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| (cx.error(ResponseError::InvalidRequest), m))?;
        cx.shared.agent.delete_acls(&filters).await.map_err(|e| {
            (
                cx.agent_error(&e, ErrorContext::Other),
                crate::error::message(&e),
            )
        })
    }
    .await;
    response.filter_results = match outcome {
        Ok(deleted) => deleted
            .into_iter()
            .map(|acls| {
                let mut result = DeleteAclsFilterResult::default();
                result.matching_acls = acls
                    .into_iter()
                    .map(|acl| {
                        let mut m = DeleteAclsMatchingAcl::default();
                        m.resource_type = resource_type_code(acl.resource_type);
                        m.resource_name = str_bytes(acl.resource_name);
                        m.pattern_type = pattern_code(acl.pattern_type);
                        m.principal = str_bytes(acl.principal);
                        m.host = str_bytes(acl.host);
                        m.operation = operation_code(acl.operation);
                        m.permission_type = permission_code(acl.permission);
                        m
                    })
                    .collect();
                result
            })
            .collect(),
        Err((code, message)) => (0..count)
            .map(|_| {
                let mut result = DeleteAclsFilterResult::default();
                result.error_code = code;
                result.error_message = Some(str_bytes(message.clone()));
                result
            })
            .collect(),
    };
    ResponseKind::DeleteAcls(response)
}
