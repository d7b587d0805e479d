//! How the SDK reaches agents: plaintext or TLS, with or without a bearer token.
//!
//! A [`Connector`] holds both; [`Connector::connect`] opens the first channel (to the
//! bootstrap agent) and returns a [`Connection`], which opens every later channel — to
//! partition owners, to group coordinators — the same way. So a client that was given
//! TLS and a token never talks to any agent without them.
//!
//! Every request on a [`Transport`] carries `authorization: Bearer <token>` when a token
//! is set; the agent refuses requests without a valid one with UNAUTHENTICATED.

use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::root_cause;
use crate::{Error, Result};

/// HTTP/2 flow-control windows (per stream and per connection) the SDK offers an agent:
/// how much of a fetch answer may be on its way before the SDK has read it. h2's default
/// (64 KiB) would hold a consumer to a round trip per 64 KiB.
pub const HTTP2_WINDOW_BYTES: u32 = 8 << 20;

/// A channel to one agent that adds the connection's credentials to every request.
pub type Transport = InterceptedService<Channel, Credentials>;

/// The bearer token added to every request, if any.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}

/// How to reach agents: TLS settings and a bearer token. The default is plaintext
/// without a token (what `strata dev` serves); a server address starting with
/// `https://` turns TLS on with the system's trusted roots.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
}

impl Connector {
    /// Plaintext, no token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Speak TLS to every agent, trusting the CA certificate(s) in `ca_pem` (PEM) for the
    /// agents' certificates; `None` trusts the system's roots.
    pub fn with_tls(mut self, ca_pem: Option<&[u8]>) -> Self {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(match ca_pem {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_native_roots(),
        });
        self
    }

    /// Present this client certificate and key (PEM) to agents that require one
    /// (mutual TLS). Implies TLS.
    pub fn with_client_identity(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        let tls = self
            .tls
            .take()
            .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
        self.tls = Some(tls.identity(Identity::from_pem(cert_pem, key_pem)));
        self
    }

    /// Send `token` as `authorization: Bearer <token>` on every request.
    pub fn with_token(mut self, token: &str) -> Result<Self> {
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            Error::InvalidArgument(
                "the token must be printable ASCII without spaces (as agents accept)".into(),
            )
        })?;
        self.credentials.authorization = Some(value);
        Ok(self)
    }

    /// Connects to `server` (`host:port`, `http://host:port` or `https://host:port`).
    pub async fn connect(&self, server: &str) -> Result<Connection> {
        let connector = match (&self.tls, server.starts_with("https://")) {
            (None, true) => self.clone().with_tls(None),
            _ => self.clone(),
        };
        let endpoint = connector
            .endpoint(server)?
            .connect_timeout(Duration::from_secs(5));
        let url = endpoint.uri().to_string();
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Error::Connect(format!("cannot reach {url}: {e}{}", root_cause(&e))))?;
        Ok(Connection {
            bootstrap: connector.transport(channel),
            connector,
        })
    }

    fn endpoint(&self, address: &str) -> Result<Endpoint> {
        let host = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .unwrap_or(address);
        let url = match self.tls {
            Some(_) => format!("https://{host}"),
            None => format!("http://{host}"),
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| Error::InvalidArgument(format!("invalid agent address '{address}': {e}")))?
            .tcp_nodelay(true)
            .initial_stream_window_size(HTTP2_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_WINDOW_BYTES);
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(|e| {
                Error::InvalidArgument(format!("TLS settings for '{address}' are invalid: {e}"))
            }),
            None => Ok(endpoint),
        }
    }

    fn transport(&self, channel: Channel) -> Transport {
        InterceptedService::new(channel, self.credentials.clone())
    }
}

/// An open channel to the agent a client was pointed at, and the [`Connector`] that opens
/// channels to the others.
#[derive(Debug, Clone)]
pub struct Connection {
    bootstrap: Transport,
    connector: Connector,
}

impl Connection {
    /// The channel to the bootstrap agent.
    pub fn transport(&self) -> Transport {
        self.bootstrap.clone()
    }

    /// A channel to the agent at `address` (as agents advertise it), connected on first
    /// use; `None` if the address is not one.
    pub(crate) fn lazy(&self, address: &str) -> Option<Transport> {
        let endpoint = self.connector.endpoint(address).ok()?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Some(self.connector.transport(channel))
    }
}
