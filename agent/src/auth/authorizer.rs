//! The authorizer: every agent's cached copy of the stored ACLs, and the one check every
//! API calls before it acts.
//!
//! Invariants:
//! - with `--authorizer acl`, anything no ACL allows is refused (and super users may do
//!   everything); a refused request changes nothing, because every API checks before it
//!   acts;
//! - the ACLs are read from the metastore at start and again on every notification of its
//!   ACL watch (and after a lost watch), never per request; until the first read
//!   succeeds, only super users are allowed;
//! - every denial counts in `strata_acl_denied_total{operation,resource_type}` and is
//!   logged at most once per principal, resource and minute (the log's memory is bounded).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use strata_metastore::{AclBinding, AclOperation, AclPermission, Metastore, ResourceType};
use tokio::sync::watch;

use super::access::{operation_name, required, resource_type_name};
use super::acl::{Decision, Resource, decide};
use super::principal::{Caller, Principal};

/// How often one principal's denials on one resource are logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Most (principal, resource) pairs whose last log time is remembered.
const MAX_LOGGED: usize = 10_000;

/// How agents authorize requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationConfig {
    /// Check ACLs (`--authorizer acl`); otherwise every authenticated request is allowed.
    pub acls: bool,
    /// Principals allowed everything, whatever the ACLs say.
    pub super_users: BTreeSet<Principal>,
}

/// A refused request: who, what, on what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Who asked.
    pub principal: Principal,
    /// The operation it needed.
    pub operation: AclOperation,
    /// The resource's type.
    pub resource_type: ResourceType,
    /// The resource's name.
    pub resource_name: String,
    /// The DENY ACL that refused it, if one did (otherwise no ALLOW applied).
    pub by: Option<AclBinding>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let operation = operation_name(self.operation);
        let kind = resource_type_name(self.resource_type);
        write!(
            f,
            "{} may not {operation} {kind} '{}': ",
            self.principal, self.resource_name
        )?;
        match &self.by {
            Some(acl) => write!(
                f,
                "a DENY ACL forbids it ({} {} '{}' for {})",
                operation_name(acl.operation),
                resource_type_name(acl.resource_type),
                acl.resource_name,
                acl.principal
            ),
            None => write!(
                f,
                "no ACL allows it (an admin can grant it: strata acl add --principal {} \
                 --{} {} --operation {})",
                self.principal.name(),
                kind.to_ascii_lowercase().replace('_', "-"),
                self.resource_name,
                operation.to_ascii_lowercase().replace('_', "-")
            ),
        }
    }
}

/// The stored ACLs by resource type.
type AclsByType = HashMap<ResourceType, Vec<AclBinding>>;

/// The cached ACLs and the check.
#[derive(Debug)]
pub struct Authorizer {
    config: AuthorizationConfig,
    /// The stored ACLs by resource type; `None` until first read.
    acls: RwLock<Option<Arc<AclsByType>>>,
    denied: IntCounterVec,
    /// When each (principal, resource type, resource) denial was last logged.
    logged: Mutex<HashMap<(Principal, ResourceType, String), Instant>>,
}

impl Authorizer {
    /// An authorizer for `config`, counting denials in `denied` (labels `operation`,
    /// `resource_type`).
    pub fn new(config: AuthorizationConfig, denied: IntCounterVec) -> Self {
        Self {
            config,
            acls: RwLock::new(None),
            denied,
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// Whether ACLs are checked.
    pub fn enabled(&self) -> bool {
        self.config.acls
    }

    /// Whether `principal` may do everything.
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        *principal == Principal::agent() || self.config.super_users.contains(principal)
    }

    /// Replaces the cached ACLs.
    pub fn replace(&self, acls: Vec<AclBinding>) {
        let mut by_type = AclsByType::new();
        for acl in acls {
            by_type.entry(acl.resource_type).or_default().push(acl);
        }
        *self.acls.write().expect("acls lock") = Some(Arc::new(by_type));
    }

    /// The cached ACLs (none before the first read).
    pub fn cached(&self) -> Vec<AclBinding> {
        self.acls
            .read()
            .expect("acls lock")
            .as_ref()
            .map(|acls| acls.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// What the ACLs say about `caller` doing `operation` on `resource`.
    fn decide(
        &self,
        caller: &Caller,
        operation: AclOperation,
        resource: &Resource<'_>,
    ) -> Decision {
        if !self.config.acls || self.is_super_user(&caller.principal) {
            return Decision::Allowed;
        }
        let acls = self.acls.read().expect("acls lock").clone();
        let Some(acls) = acls else {
            return Decision::NotAllowed;
        };
        decide(
            acls.get(&resource.resource_type).into_iter().flatten(),
            caller.principal.as_str(),
            &caller.host,
            operation,
            resource,
        )
    }

    /// Checks that `caller` may call `api` on `resource` (the operation is the access
    /// table's); a denial is counted and logged.
    pub fn check(
        &self,
        caller: &Caller,
        api: &str,
        resource: Resource<'_>,
    ) -> Result<(), Box<Denied>> {
        if !self.config.acls {
            return Ok(());
        }
        let operation = operation_for(api, resource.resource_type);
        match self.decide(caller, operation, &resource) {
            Decision::Allowed => Ok(()),
            Decision::Denied(acl) => Err(Box::new(self.refuse(
                caller,
                operation,
                &resource,
                Some(acl),
            ))),
            Decision::NotAllowed => Err(Box::new(self.refuse(caller, operation, &resource, None))),
        }
    }

    /// Whether `caller` may call `api` on `resource`, for answers that leave out what the
    /// caller may not see (nothing is counted or logged).
    pub fn permits(&self, caller: &Caller, api: &str, resource: Resource<'_>) -> bool {
        !self.config.acls
            || self.decide(
                caller,
                operation_for(api, resource.resource_type),
                &resource,
            ) == Decision::Allowed
    }

    /// Whether some ACL allows `caller` `operation` on some resource of `resource_type`,
    /// and no DENY of it on all of them (`*`) applies: Kafka's test for idempotent
    /// producers, which may write to some topic.
    pub fn permits_on_any(
        &self,
        caller: &Caller,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.config.acls || self.is_super_user(&caller.principal) {
            return true;
        }
        let acls = self.acls.read().expect("acls lock").clone();
        let Some(acls) = acls else {
            return false;
        };
        if let Decision::Denied(_) = self.decide(
            caller,
            operation,
            &Resource {
                resource_type,
                name: super::acl::WILDCARD,
            },
        ) {
            return false;
        }
        acls.get(&resource_type).into_iter().flatten().any(|acl| {
            acl.permission == AclPermission::Allow
                && (acl.operation == operation || acl.operation == AclOperation::All)
                && (acl.principal == caller.principal.as_str()
                    || acl.principal == super::acl::ANY_PRINCIPAL)
                && (acl.host == super::acl::WILDCARD || acl.host == caller.host)
        })
    }

    /// Counts and (at most once a minute per principal and resource) logs a denial.
    fn refuse(
        &self,
        caller: &Caller,
        operation: AclOperation,
        resource: &Resource<'_>,
        by: Option<AclBinding>,
    ) -> Denied {
        self.denied
            .with_label_values(&[
                operation_name(operation),
                resource_type_name(resource.resource_type),
            ])
            .inc();
        let denied = Denied {
            principal: caller.principal.clone(),
            operation,
            resource_type: resource.resource_type,
            resource_name: resource.name.to_string(),
            by,
        };
        let now = Instant::now();
        let key = (
            caller.principal.clone(),
            resource.resource_type,
            resource.name.to_string(),
        );
        let mut logged = self.logged.lock().expect("logged lock");
        if logged.len() >= MAX_LOGGED {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            if logged.len() >= MAX_LOGGED {
                logged.clear();
            }
        }
        let due = logged
            .get(&key)
            .is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
        if due {
            logged.insert(key, now);
            tracing::warn!(
                principal = %caller.principal, host = %caller.host,
                operation = operation_name(operation),
                resource_type = resource_type_name(resource.resource_type),
                resource = resource.name,
                "request denied: {denied}"
            );
        }
        denied
    }

    /// Reads the ACLs now.
    pub async fn reload(&self, metastore: &dyn Metastore) -> strata_metastore::Result<()> {
        let acls = metastore.acls().await?;
        tracing::debug!(count = acls.len(), "ACLs read");
        self.replace(acls);
        Ok(())
    }

    /// Follows the stored ACLs until `stop` (see the module's invariants).
    pub async fn follow(
        self: Arc<Self>,
        metastore: Arc<dyn Metastore>,
        stop: watch::Receiver<bool>,
    ) {
        let metastore = metastore.as_ref();
        crate::follow::follow_changes(
            "acls",
            stop,
            || metastore.watch_acls(),
            || self.reload(metastore),
        )
        .await;
    }
}

/// The operation the access table says `api` needs on `resource_type`; a missing row is
/// a bug, and is answered as a need no one but super users has.
fn operation_for(api: &str, resource_type: ResourceType) -> AclOperation {
    required(api, resource_type).unwrap_or_else(|| {
        debug_assert!(false, "no access row for {api} on {resource_type:?}");
        tracing::error!(
            api,
            ?resource_type,
            "no access row: only super users are allowed"
        );
        AclOperation::ClusterAction
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_metastore::PatternType;

    fn authorizer(acls: Vec<AclBinding>) -> Authorizer {
        let denied = IntCounterVec::new(
            prometheus::Opts::new("denied", "denied"),
            &["operation", "resource_type"],
        )
        .unwrap();
        let authorizer = Authorizer::new(
            AuthorizationConfig {
                acls: true,
                super_users: [Principal::user("admin")].into(),
            },
            denied,
        );
        authorizer.replace(acls);
        authorizer
    }

    fn caller(name: &str) -> Caller {
        Caller::new(Principal::user(name), "10.0.0.1")
    }

    fn allow(name: &str, pattern_type: PatternType, operation: AclOperation) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            pattern_type,
            resource_name: name.to_string(),
            principal: "User:billing".to_string(),
            host: "*".to_string(),
            operation,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn checks_by_the_access_table_and_counts_denials() {
        let authorizer = authorizer(vec![allow(
            "orders-",
            PatternType::Prefixed,
            AclOperation::Write,
        )]);
        let billing = caller("billing");
        assert!(
            authorizer
                .check(&billing, "Log.Produce", Resource::topic("orders-eu"))
                .is_ok()
        );
        let denied = authorizer
            .check(&billing, "Log.Produce", Resource::topic("payments"))
            .unwrap_err();
        assert!(
            denied
                .to_string()
                .contains("User:billing may not WRITE TOPIC 'payments'"),
            "{denied}"
        );
        assert!(
            denied
                .to_string()
                .contains("strata acl add --principal billing --topic payments --operation write"),
            "{denied}"
        );
        // Reading needs READ, which WRITE does not give; DESCRIBE it does.
        assert!(
            authorizer
                .check(&billing, "Log.Fetch", Resource::topic("orders-eu"))
                .is_err()
        );
        assert!(authorizer.permits(&billing, "Cluster.Metadata", Resource::topic("orders-eu")));
        assert!(!authorizer.permits(&billing, "Cluster.Metadata", Resource::topic("payments")));
        assert_eq!(
            authorizer
                .denied
                .with_label_values(&["WRITE", "TOPIC"])
                .get(),
            1
        );
        assert_eq!(
            authorizer
                .denied
                .with_label_values(&["READ", "TOPIC"])
                .get(),
            1
        );
        // Super users and agents may do everything; others nothing without an ACL.
        assert!(
            authorizer
                .check(&caller("admin"), "Admin.DeleteTopic", Resource::topic("x"))
                .is_ok()
        );
        assert!(
            authorizer
                .check(
                    &Caller::agent(),
                    "Transactions.WriteMarker",
                    Resource::cluster()
                )
                .is_ok()
        );
        assert!(
            authorizer
                .check(
                    &caller("other"),
                    "Log.Produce",
                    Resource::topic("orders-eu")
                )
                .is_err()
        );
        // Idempotent producers: WRITE on some topic is enough.
        assert!(authorizer.permits_on_any(&billing, AclOperation::Write, ResourceType::Topic));
        assert!(!authorizer.permits_on_any(
            &caller("other"),
            AclOperation::Write,
            ResourceType::Topic
        ));
    }

    #[test]
    fn denials_are_logged_once_a_minute_per_principal_and_resource() {
        let authorizer = authorizer(Vec::new());
        for _ in 0..5 {
            let _ = authorizer.check(&caller("x"), "Log.Produce", Resource::topic("t"));
        }
        let _ = authorizer.check(&caller("x"), "Log.Produce", Resource::topic("u"));
        assert_eq!(authorizer.logged.lock().unwrap().len(), 2);
        assert_eq!(
            authorizer
                .denied
                .with_label_values(&["WRITE", "TOPIC"])
                .get(),
            6
        );
    }

    #[test]
    fn nothing_is_allowed_before_the_acls_are_read_and_everything_when_off() {
        let denied = IntCounterVec::new(
            prometheus::Opts::new("d", "d"),
            &["operation", "resource_type"],
        )
        .unwrap();
        let unread = Authorizer::new(
            AuthorizationConfig {
                acls: true,
                super_users: BTreeSet::new(),
            },
            denied.clone(),
        );
        assert!(
            unread
                .check(&caller("billing"), "Log.Fetch", Resource::topic("t"))
                .is_err()
        );
        let off = Authorizer::new(AuthorizationConfig::default(), denied);
        assert!(
            off.check(&caller("billing"), "Log.Fetch", Resource::topic("t"))
                .is_ok()
        );
    }
}
