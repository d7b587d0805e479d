//! Who may do what on an agent.
//!
//! - [`security`]: TLS on the listener, bearer tokens, and the interceptor that turns a
//!   request's credentials into a [`principal::Caller`];
//! - [`principal`]: principals (`User:<name>`) from tokens and client certificates;
//! - [`acl`]: Kafka's ACL model, evaluated (pure);
//! - [`admin`]: creating, describing and deleting ACLs;
//! - [`access`]: the one table of what each gRPC RPC and Kafka API needs;
//! - [`grpc`]: the gRPC `Acls` service;
//! - [`authorizer`]: the cached ACLs, followed through a watch, and the check every API
//!   calls before it acts.

pub mod access;
pub mod acl;
pub mod admin;
pub mod authorizer;
pub mod grpc;
pub mod principal;
pub mod security;

pub use acl::{AclFilter, PatternFilter, Resource};
pub use authorizer::{AuthorizationConfig, Authorizer, Denied};
pub use principal::{Caller, Principal};
