//! `strata acl add | list | remove`: ACLs as Kafka's `kafka-acls.sh` manages them.

use anyhow::{Result, bail};
use strata_client::proto;
use strata_client::proto::acls_client::AclsClient;

use crate::args::{AclArgs, AclCommand, AclResource, AclSelection};
use crate::target::{Target, answer};

pub async fn run(server: &Target, command: AclCommand) -> Result<()> {
    let mut client = AclsClient::new(server.connect().await?.transport());
    match command {
        AclCommand::Add(args) => {
            let acls = bindings(&args)?;
            let count = acls.len();
            answer(client.create_acls(proto::CreateAclsRequest { acls }).await)?;
            println!("added {count} ACL(s)");
        }
        AclCommand::List(selection) => {
            let filter = Some(list_filter(&selection)?);
            let acls = answer(
                client
                    .describe_acls(proto::DescribeAclsRequest { filter })
                    .await,
            )?
            .acls;
            print_acls(&acls);
        }
        AclCommand::Remove(args) => {
            let filters = remove_filters(&args)?;
            let deleted = answer(
                client
                    .delete_acls(proto::DeleteAclsRequest { filters })
                    .await,
            )?
            .deleted;
            println!("removed {} ACL(s)", deleted.len());
            print_acls(&deleted);
        }
    }
    Ok(())
}

fn print_acls(acls: &[proto::AclBinding]) {
    println!("PRINCIPAL\tPERMISSION\tOPERATION\tRESOURCE_TYPE\tPATTERN\tRESOURCE\tHOST");
    for acl in acls {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            acl.principal,
            enum_name(acl.permission().as_str_name(), "ACL_PERMISSION_"),
            enum_name(acl.operation().as_str_name(), "ACL_OPERATION_"),
            enum_name(acl.resource_type().as_str_name(), "ACL_RESOURCE_TYPE_"),
            enum_name(acl.pattern_type().as_str_name(), "ACL_PATTERN_TYPE_"),
            acl.resource_name,
            acl.host
        );
    }
}

fn enum_name<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// The principal as stored: `User:<name>`; `*` is everyone.
fn principal(name: &str) -> String {
    if name == "*" {
        "User:*".to_string()
    } else if name.starts_with("User:") {
        name.to_string()
    } else {
        format!("User:{name}")
    }
}

fn operation(name: &str) -> Result<proto::AclOperation> {
    use proto::AclOperation as O;
    Ok(
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "all" => O::All,
            "read" => O::Read,
            "write" => O::Write,
            "create" => O::Create,
            "delete" => O::Delete,
            "alter" => O::Alter,
            "describe" => O::Describe,
            "describe-configs" => O::DescribeConfigs,
            "alter-configs" => O::AlterConfigs,
            "idempotent-write" => O::IdempotentWrite,
            "cluster-action" => O::ClusterAction,
            other => bail!(
                "unknown operation '{other}': use read, write, create, delete, alter, describe, \
             describe-configs, alter-configs, idempotent-write, cluster-action or all"
            ),
        },
    )
}

/// The resource type and name the arguments give, if any.
fn resource(r: &AclResource) -> Option<(proto::AclResourceType, String)> {
    use proto::AclResourceType as T;
    if let Some(topic) = &r.topic {
        Some((T::Topic, topic.clone()))
    } else if let Some(group) = &r.group {
        Some((T::Group, group.clone()))
    } else if let Some(id) = &r.transactional_id {
        Some((T::TransactionalId, id.clone()))
    } else if r.cluster {
        Some((T::Cluster, "kafka-cluster".to_string()))
    } else {
        None
    }
}

fn pattern(r: &AclResource) -> proto::AclPatternType {
    if r.prefixed {
        proto::AclPatternType::Prefixed
    } else {
        proto::AclPatternType::Literal
    }
}

fn permission(deny: bool) -> proto::AclPermission {
    if deny {
        proto::AclPermission::Deny
    } else {
        proto::AclPermission::Allow
    }
}

fn bindings(args: &AclArgs) -> Result<Vec<proto::AclBinding>> {
    let Some((resource_type, name)) = resource(&args.resource) else {
        bail!("say which resource: --topic, --group, --transactional-id or --cluster");
    };
    if args.operation.is_empty() {
        bail!("say which operations: --operation read,write,...");
    }
    args.operation
        .iter()
        .map(|op| {
            Ok(proto::AclBinding {
                resource_type: resource_type as i32,
                pattern_type: pattern(&args.resource) as i32,
                resource_name: name.clone(),
                principal: principal(&args.principal),
                host: args.host.clone(),
                operation: operation(op)? as i32,
                permission: permission(args.deny) as i32,
            })
        })
        .collect()
}

fn list_filter(selection: &AclSelection) -> Result<proto::AclFilter> {
    let (resource_type, name, pattern_type) = match resource(&selection.resource) {
        // The ACLs that apply to the resource (its literal name, `*`, prefixes of it),
        // unless asked for the prefixed pattern itself.
        Some((t, name)) if selection.resource.prefixed => {
            (t, Some(name), proto::AclPatternType::Prefixed)
        }
        Some((t, name)) => (t, Some(name), proto::AclPatternType::Match),
        None => (
            proto::AclResourceType::Unspecified,
            None,
            proto::AclPatternType::Unspecified,
        ),
    };
    Ok(proto::AclFilter {
        resource_type: resource_type as i32,
        pattern_type: pattern_type as i32,
        resource_name: name,
        principal: selection.principal.as_deref().map(principal),
        host: None,
        operation: 0,
        permission: 0,
    })
}

fn remove_filters(args: &AclArgs) -> Result<Vec<proto::AclFilter>> {
    let Some((resource_type, name)) = resource(&args.resource) else {
        bail!("say which resource: --topic, --group, --transactional-id or --cluster");
    };
    let filter = |operation: i32| proto::AclFilter {
        resource_type: resource_type as i32,
        pattern_type: pattern(&args.resource) as i32,
        resource_name: Some(name.clone()),
        principal: Some(principal(&args.principal)),
        host: Some(args.host.clone()),
        operation,
        permission: permission(args.deny) as i32,
    };
    if args.operation.is_empty() {
        return Ok(vec![filter(0)]);
    }
    args.operation
        .iter()
        .map(|op| Ok(filter(operation(op)? as i32)))
        .collect()
}
