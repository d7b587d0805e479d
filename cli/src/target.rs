//! Where user commands connect: the agent's address, TLS and the bearer token.

use std::path::Path;

use anyhow::{Context, Result};
use strata_client::{Admin, Connection, Connector};

use crate::args::ClientArgs;

/// The agent user commands talk to, and how.
#[derive(Debug, Clone)]
pub struct Target {
    server: String,
    connector: Connector,
}

/// Reads a PEM file named by a flag, saying which flag when it cannot.
pub fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))?;
    anyhow::ensure!(
        pem.windows(11).any(|w| w == b"-----BEGIN "),
        "{flag} {} is not PEM (no -----BEGIN line)",
        path.display()
    );
    Ok(pem)
}

impl Target {
    /// The target `args` describe; files are read now, so a bad path fails before any
    /// connection is tried.
    pub fn new(args: &ClientArgs) -> Result<Self> {
        let mut connector = Connector::new();
        if let Some(ca) = &args.tls_ca {
            connector = connector.with_tls(Some(&read_pem(ca, "--tls-ca")?));
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            connector = connector
                .with_client_identity(&read_pem(cert, "--tls-cert")?, &read_pem(key, "--tls-key")?);
        }
        if let Some(token) = &args.token {
            connector = connector.with_token(token)?;
        }
        Ok(Self {
            server: args.server.clone(),
            connector,
        })
    }

    /// A connection to the agent.
    pub async fn connect(&self) -> Result<Connection> {
        Ok(self.connector.connect(&self.server).await?)
    }

    /// Admin operations on the agent.
    pub async fn admin(&self) -> Result<Admin> {
        Ok(Admin::new(self.connect().await?))
    }
}

/// The message of an agent's answer; an error status reads as the SDK shows it (its code,
/// message and innermost cause).
pub fn answer<T>(response: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    Ok(response.map_err(strata_client::Error::from)?.into_inner())
}
