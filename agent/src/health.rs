//! The standard gRPC health service (`grpc.health.v1`), for load balancers, container
//! health checks and `strata health`; it needs no token. The agent as a whole (`""`) and
//! each of its services are SERVING until a part of the agent fails (see
//! `Inner::fail`), then NOT_SERVING until the process exits. Served with Strata's codec,
//! so that a request that does not decode is INVALID_ARGUMENT here too.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use strata_proto::health::health_check_response::ServingStatus;
use strata_proto::health::health_server::Health;
use strata_proto::health::{HealthCheckRequest, HealthCheckResponse};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::limits::shown;

/// The names the health service answers for: the agent, and each gRPC service.
pub const SERVICES: &[&str] = &[
    "",
    "strata.v1.Admin",
    "strata.v1.Log",
    "strata.v1.Cluster",
    "strata.v1.Groups",
];

/// The agent's health, from its failure state.
#[derive(Debug, Clone)]
pub struct AgentHealth {
    failed: watch::Receiver<Option<String>>,
    /// Watch streams end when the server begins to stop, so that it can drain.
    stopping: watch::Receiver<bool>,
}

impl AgentHealth {
    /// Health that follows `failed` (see `Agent::failed`).
    pub fn new(failed: watch::Receiver<Option<String>>, stopping: watch::Receiver<bool>) -> Self {
        Self { failed, stopping }
    }
}

fn response(failure: &Option<String>) -> HealthCheckResponse {
    let status = if failure.is_some() {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchResponses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for AgentHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !SERVICES.contains(&service.as_str()) {
            return Err(Status::not_found(format!(
                "this agent has no service '{}'; ask for \"\" (the agent) or one of {}",
                shown(&service),
                SERVICES[1..].join(", ")
            )));
        }
        Ok(Response::new(response(&self.failed.borrow())))
    }

    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let statuses: WatchResponses = if SERVICES.contains(&service.as_str()) {
            Box::pin(WatchStream::new(self.failed.clone()).map(|failure| Ok(response(&failure))))
        } else {
            let unknown = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown as i32,
            };
            Box::pin(
                futures::stream::once(async move { Ok(unknown) }).chain(futures::stream::pending()),
            )
        };
        Ok(Response::new(Box::pin(statuses.take_until(stopped))))
    }
}
