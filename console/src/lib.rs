//! The Strata web console, served by every agent on its HTTP port (the one with
//! `/metrics`): Overview, Topics, a topic (partitions, configs, message browser, produce
//! form), Consumer groups (lag and its chart), Archive, and Compactor & transactions.
//!
//! Invariants:
//! - **Same numbers as the CLI.** Every figure comes from the agent's public gRPC
//!   operations, called through the SDK (`strata-client`) exactly as the `strata` CLI
//!   calls them; the console computes nothing the CLI does not (shared formulas live in
//!   `strata-proto`). The only figures of its own are rates and the charts' history,
//!   sampled from those same operations ([`history`]).
//! - **Checked as the gRPC API is.** A page or action is one or more gRPC calls made with
//!   the visitor's own bearer token, so authentication and ACLs are the agent's; the
//!   console never calls on a visitor's behalf with its own credentials. Its sampler does
//!   (the agents' token), and what it gathered is shown only after the visitor's own call
//!   for the same group or cluster succeeded.
//! - **Tokens stay out of URLs and logs**: a token is posted once by the login form and
//!   kept in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over TLS); every form that
//!   changes something carries a CSRF token that must match the visitor's CSRF cookie,
//!   and a cross-origin `Origin` is refused ([`session`]).
//! - **Bounded**: every list and record shown has a cap ([`pages::MAX_MESSAGES`],
//!   [`pages::MAX_SHOWN_BYTES`]), the history is a fixed ring per series, and the
//!   number of groups charted is capped ([`history::MAX_GROUPS`]).
//! - Everything the pages need is embedded in the binary (no CDN, no Node.js at run time).

pub mod chart;
pub mod error;
pub mod history;
pub mod http;
pub mod pages;
pub mod session;

use std::sync::Arc;

use axum::routing::{get, post};
use strata_client::{Admin, Connection, Connector};

pub use error::ConsoleError;
pub use history::History;

/// How the console reaches the agent that serves it, and what that agent requires.
#[derive(Clone)]
pub struct ConsoleConfig {
    /// The agent's gRPC address, as clients reach it (its advertised address).
    pub grpc_address: String,
    /// How to reach agents (TLS settings), without a token: each call adds the
    /// visitor's.
    pub connector: Connector,
    /// Whether the agent requires bearer tokens: the console then asks for one.
    pub tokens_required: bool,
    /// The agent requires client certificates and takes no tokens: the console cannot
    /// tell who a visitor is, so it serves nothing but an explanation.
    pub certificates_only: bool,
    /// What the sampler presents: the agents' own token, when tokens are on.
    pub sampler_token: Option<String>,
    /// Whether the HTTP port serves TLS (cookies are then `Secure`).
    pub tls: bool,
}

impl std::fmt::Debug for ConsoleConfig {
    /// Never shows the sampler's token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("grpc_address", &self.grpc_address)
            .field("tokens_required", &self.tokens_required)
            .field("certificates_only", &self.certificates_only)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The console of one agent: its configuration and the history its sampler keeps.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ConsoleConfig,
    history: History,
}

impl Console {
    /// A console for the agent `config` describes; call [`Console::start_sampler`] to
    /// chart the last hour.
    pub fn new(config: ConsoleConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                history: History::default(),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ConsoleConfig {
        &self.inner.config
    }

    /// What the sampler gathered.
    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// Samples the cluster every [`history::SAMPLE_INTERVAL`] until the process ends
    /// (not on an agent that authenticates by certificate only: no page shows it).
    pub fn start_sampler(&self) {
        if self.inner.config.certificates_only {
            return;
        }
        let console = self.clone();
        tokio::spawn(async move { history::run_sampler(console).await });
    }

    /// The agent's connector, carrying `token` (none without tokens).
    pub fn connector(&self, token: Option<&str>) -> Result<strata_client::Connector, ConsoleError> {
        let connector = self.inner.config.connector.clone();
        Ok(match token {
            Some(token) => connector.with_token(token)?,
            None => connector,
        })
    }

    /// A connection to the agent carrying `token` (none without tokens).
    pub async fn connect(&self, token: Option<&str>) -> Result<Connection, ConsoleError> {
        Ok(self
            .connector(token)?
            .connect(&self.inner.config.grpc_address)
            .await?)
    }

    /// Admin operations as `token`'s holder.
    pub async fn admin(&self, token: Option<&str>) -> Result<Admin, ConsoleError> {
        Ok(Admin::new(self.connect(token).await?))
    }

    /// The console's routes; merge them with the port's `/metrics` and serve with
    /// [`http::serve`].
    pub fn router(&self) -> axum::Router {
        let routes = axum::Router::new()
            .route("/", get(pages::overview::page))
            .route(
                "/topics",
                get(pages::topics::list).post(pages::topics::create),
            )
            .route("/topics/{name}", get(pages::topics::page))
            .route("/topics/{name}/config", post(pages::topics::alter))
            .route(
                "/topics/{name}/partitions",
                post(pages::topics::add_partitions),
            )
            .route("/topics/{name}/delete", post(pages::topics::delete))
            .route("/topics/{name}/produce", post(pages::topics::produce))
            .route("/groups", get(pages::groups::list))
            .route("/groups/{id}", get(pages::groups::page))
            .route("/groups/{id}/reset", post(pages::groups::reset))
            .route("/groups/{id}/delete", post(pages::groups::delete))
            .route("/archive", get(pages::archive::page))
            .route("/compactor", get(pages::compactor::page))
            .route("/login", get(session::login_page).post(session::login))
            .route("/logout", post(session::logout))
            .route("/console.css", get(pages::stylesheet))
            .route("/console.js", get(pages::script))
            .route("/favicon.svg", get(pages::favicon))
            .route("/favicon.ico", get(pages::favicon))
            .with_state(self.clone());
        routes.layer(axum::middleware::from_fn_with_state(
            self.clone(),
            session::attach,
        ))
    }
}
