//! The gRPC `Acls` service: managing ACLs, and the conversions between the API's
//! messages and the stored ACLs.

use strata_metastore::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use strata_proto::v1 as pb;
use strata_proto::v1::acls_server::Acls;
use tonic::{Request, Response, Status};

use super::acl::{AclFilter, PatternFilter, Resource};
use super::security::caller_of;
use crate::Agent;
use crate::service::status;

/// Serves `Acls` for an agent.
#[derive(Debug, Clone)]
pub struct AclService {
    agent: Agent,
}

impl AclService {
    /// The service of `agent`.
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }

    fn authorize<T>(&self, request: &Request<T>, api: &str) -> Result<(), Status> {
        self.agent
            .authorize(&caller_of(request), api, Resource::cluster())
            .map_err(status)
    }
}

#[tonic::async_trait]
impl Acls for AclService {
    async fn create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        self.authorize(&request, "Acls.CreateAcls")?;
        let acls = request
            .into_inner()
            .acls
            .iter()
            .map(binding_from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        self.agent.create_acls(acls).await.map_err(status)?;
        Ok(Response::new(pb::CreateAclsResponse {}))
    }

    async fn describe_acls(
        &self,
        request: Request<pb::DescribeAclsRequest>,
    ) -> Result<Response<pb::DescribeAclsResponse>, Status> {
        self.authorize(&request, "Acls.DescribeAcls")?;
        let filter = filter_from_proto(request.into_inner().filter.unwrap_or_default())?;
        let acls = self.agent.describe_acls(&filter).await.map_err(status)?;
        Ok(Response::new(pb::DescribeAclsResponse {
            acls: acls.iter().map(binding_to_proto).collect(),
        }))
    }

    async fn delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        self.authorize(&request, "Acls.DeleteAcls")?;
        let filters = request
            .into_inner()
            .filters
            .into_iter()
            .map(filter_from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let deleted = self.agent.delete_acls(&filters).await.map_err(status)?;
        Ok(Response::new(pb::DeleteAclsResponse {
            deleted: deleted.iter().flatten().map(binding_to_proto).collect(),
        }))
    }
}

fn resource_type(value: i32) -> Result<Option<ResourceType>, Status> {
    use pb::AclResourceType as T;
    match T::try_from(value) {
        Ok(T::Unspecified) => Ok(None),
        Ok(T::Topic) => Ok(Some(ResourceType::Topic)),
        Ok(T::Group) => Ok(Some(ResourceType::Group)),
        Ok(T::Cluster) => Ok(Some(ResourceType::Cluster)),
        Ok(T::TransactionalId) => Ok(Some(ResourceType::TransactionalId)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown resource type {value}"
        ))),
    }
}

fn operation(value: i32) -> Result<Option<AclOperation>, Status> {
    use pb::AclOperation as O;
    Ok(Some(match O::try_from(value) {
        Ok(O::Unspecified) => return Ok(None),
        Ok(O::All) => AclOperation::All,
        Ok(O::Read) => AclOperation::Read,
        Ok(O::Write) => AclOperation::Write,
        Ok(O::Create) => AclOperation::Create,
        Ok(O::Delete) => AclOperation::Delete,
        Ok(O::Alter) => AclOperation::Alter,
        Ok(O::Describe) => AclOperation::Describe,
        Ok(O::DescribeConfigs) => AclOperation::DescribeConfigs,
        Ok(O::AlterConfigs) => AclOperation::AlterConfigs,
        Ok(O::IdempotentWrite) => AclOperation::IdempotentWrite,
        Ok(O::ClusterAction) => AclOperation::ClusterAction,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown operation {value}"
            )));
        }
    }))
}

fn permission(value: i32) -> Result<Option<AclPermission>, Status> {
    use pb::AclPermission as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => Ok(None),
        Ok(P::Allow) => Ok(Some(AclPermission::Allow)),
        Ok(P::Deny) => Ok(Some(AclPermission::Deny)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown permission {value}"
        ))),
    }
}

/// An ACL as the API gives it; every field but the host is required.
pub fn binding_from_proto(acl: &pb::AclBinding) -> Result<AclBinding, Status> {
    let missing = |what: &str| Status::invalid_argument(format!("an ACL needs {what}"));
    Ok(AclBinding {
        resource_type: resource_type(acl.resource_type)?
            .ok_or_else(|| missing("a resource type"))?,
        pattern_type: match pb::AclPatternType::try_from(acl.pattern_type) {
            Ok(pb::AclPatternType::Literal) | Ok(pb::AclPatternType::Unspecified) => {
                PatternType::Literal
            }
            Ok(pb::AclPatternType::Prefixed) => PatternType::Prefixed,
            _ => {
                return Err(Status::invalid_argument(
                    "an ACL's pattern is LITERAL or PREFIXED",
                ));
            }
        },
        resource_name: acl.resource_name.clone(),
        principal: acl.principal.clone(),
        host: acl.host.clone(),
        operation: operation(acl.operation)?.ok_or_else(|| missing("an operation"))?,
        permission: permission(acl.permission)?.ok_or_else(|| missing("a permission"))?,
    })
}

/// A stored ACL as the API shows it.
pub fn binding_to_proto(acl: &AclBinding) -> pb::AclBinding {
    pb::AclBinding {
        resource_type: match acl.resource_type {
            ResourceType::Topic => pb::AclResourceType::Topic,
            ResourceType::Group => pb::AclResourceType::Group,
            ResourceType::Cluster => pb::AclResourceType::Cluster,
            ResourceType::TransactionalId => pb::AclResourceType::TransactionalId,
        } as i32,
        pattern_type: match acl.pattern_type {
            PatternType::Literal => pb::AclPatternType::Literal,
            PatternType::Prefixed => pb::AclPatternType::Prefixed,
        } as i32,
        resource_name: acl.resource_name.clone(),
        principal: acl.principal.clone(),
        host: acl.host.clone(),
        operation: match acl.operation {
            AclOperation::All => pb::AclOperation::All,
            AclOperation::Read => pb::AclOperation::Read,
            AclOperation::Write => pb::AclOperation::Write,
            AclOperation::Create => pb::AclOperation::Create,
            AclOperation::Delete => pb::AclOperation::Delete,
            AclOperation::Alter => pb::AclOperation::Alter,
            AclOperation::Describe => pb::AclOperation::Describe,
            AclOperation::DescribeConfigs => pb::AclOperation::DescribeConfigs,
            AclOperation::AlterConfigs => pb::AclOperation::AlterConfigs,
            AclOperation::IdempotentWrite => pb::AclOperation::IdempotentWrite,
            AclOperation::ClusterAction => pb::AclOperation::ClusterAction,
        } as i32,
        permission: match acl.permission {
            AclPermission::Allow => pb::AclPermission::Allow,
            AclPermission::Deny => pb::AclPermission::Deny,
        } as i32,
    }
}

/// A filter as the API gives it.
pub fn filter_from_proto(filter: pb::AclFilter) -> Result<AclFilter, Status> {
    let principal = match filter.principal.filter(|p| !p.is_empty()) {
        Some(p) => Some(
            super::principal::Principal::parse(&p)
                .ok_or_else(|| Status::invalid_argument(format!("'{p}' is not a principal")))?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    Ok(AclFilter {
        resource_type: resource_type(filter.resource_type)?,
        pattern: match pb::AclPatternType::try_from(filter.pattern_type) {
            Ok(pb::AclPatternType::Unspecified) => PatternFilter::Any,
            Ok(pb::AclPatternType::Literal) => PatternFilter::Exactly(PatternType::Literal),
            Ok(pb::AclPatternType::Prefixed) => PatternFilter::Exactly(PatternType::Prefixed),
            Ok(pb::AclPatternType::Match) => PatternFilter::Match,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown pattern type {}",
                    filter.pattern_type
                )));
            }
        },
        resource_name: filter.resource_name.filter(|n| !n.is_empty()),
        principal,
        host: filter.host.filter(|h| !h.is_empty()),
        operation: operation(filter.operation)?,
        permission: permission(filter.permission)?,
    })
}
