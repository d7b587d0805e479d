//! The listener: accepts connections (plaintext or TLS), reads frames within their
//! bounds, decodes them with `kafka-protocol`, hands them to [`crate::api`], and writes
//! the answers back in request order.
//!
//! A frame is a 4-byte big-endian length and that many bytes: the request header (API
//! key, version, correlation id, client id) and the body. Bounds, each checked before
//! anything is allocated for the frame:
//! - its length is at least a header's and at most [`KafkaConfig::max_request_bytes`];
//! - the frames held at once by every connection together (read, being served, or
//!   waiting for their commit) take at most [`KafkaConfig::max_inflight_bytes`]; a frame
//!   waits for room before its body is read;
//! - a body must arrive within [`FRAME_TIMEOUT`] of its length;
//! - a connection has at most [`MAX_INFLIGHT_REQUESTS`] requests waiting for their answers,
//!   and the listener at most [`KafkaConfig::max_connections`] connections.
//!
//! A frame that breaks a bound or does not decode closes its connection, with one log
//! line; the agent and every other connection carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use strata_agent::Agent;
use strata_agent::auth::Principal;
use strata_agent::auth::security::{BearerTokens, ServerTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::api::{self, Outcome, Session};
use crate::metrics::KafkaMetrics;

/// Kafka's `socket.request.max.bytes` default: the largest frame accepted.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Requests of one connection waiting for their answers at once (Kafka producers send up
/// to 5); the connection is not read while this many wait.
pub const MAX_INFLIGHT_REQUESTS: usize = 16;

/// How long a frame's body may take to arrive once its length has.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection may stay idle between requests (Kafka's
/// `connections.max.idle.ms`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long an answer may take to be written (a client that does not read its answers is
/// closed, and the memory they hold freed).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest frame of a connection that has not authenticated (when the agent has tokens):
/// ApiVersions and SASL are small (Kafka's `sasl.server.max.receive.size`).
pub const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// Smallest frame: API key, version and correlation id.
const MIN_FRAME: usize = 8;

/// How the Kafka listener runs.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The largest frame accepted (`--kafka-max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most bytes of frames held at once by all connections together; at least
    /// `max_request_bytes`.
    pub max_inflight_bytes: usize,
    /// Most connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// TLS, with the agent's certificate; `None` = plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Tokens SASL must carry; `None` = no authentication.
    pub tokens: Option<BearerTokens>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_inflight_bytes: 4 * DEFAULT_MAX_REQUEST_BYTES,
            max_connections: 10_000,
            tls: None,
            tokens: None,
        }
    }
}

/// The rustls configuration of the agent's TLS material: its certificate, and with a
/// client CA, client certificates required (mutual TLS).
pub fn tls_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the TLS certificate: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| format!("the TLS key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.map_err(|e| format!("the client CA: {e}"))?)
                    .map_err(|e| format!("the client CA: {e}"))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("the client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub agent: Agent,
    pub config: KafkaConfig,
    pub metrics: KafkaMetrics,
    /// Bytes of frames held: one permit per byte.
    memory: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

/// Serves Kafka clients on `listener` until `shutdown` completes; then stops accepting
/// and closes every connection between requests.
pub async fn serve(
    agent: Agent,
    listener: TcpListener,
    config: KafkaConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let config = KafkaConfig {
        max_inflight_bytes: config.max_inflight_bytes.max(config.max_request_bytes),
        ..config
    };
    let metrics = KafkaMetrics::new(agent.metrics().registry());
    let shared = Arc::new(Shared {
        memory: Arc::new(Semaphore::new(
            config.max_inflight_bytes.min(Semaphore::MAX_PERMITS),
        )),
        connections: Arc::new(Semaphore::new(config.max_connections)),
        agent,
        config,
        metrics,
    });
    let tls = shared
        .config
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "kafka listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = shared.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = shared.config.max_connections,
                "kafka listener: closing a connection over --kafka-max-connections");
            shared
                .metrics
                .connections_refused
                .with_label_values(&["max_connections"])
                .inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.metrics.connections_accepted.inc();
        let shared = shared.clone();
        let tls = tls.clone();
        let stopping = stopping.clone();
        let span = tracing::info_span!("kafka.connection", %peer);
        tokio::spawn(
            async move {
                let _slot = slot;
                shared.metrics.connections.inc();
                match tls {
                    None => connection(&shared, stream, peer, None, stopping).await,
                    Some(tls) => match tokio::time::timeout(FRAME_TIMEOUT, tls.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            // Under mutual TLS the certificate's subject is the principal
                            // (until SASL names another).
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| Principal::from_certificate(c));
                            connection(&shared, stream, peer, certificate, stopping).await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "kafka connection closed: TLS handshake failed");
                        }
                        Err(_) => tracing::info!("kafka connection closed: TLS handshake timed out"),
                    },
                }
                shared.metrics.connections.dec();
            }
            .instrument(span),
        );
    }
    let _ = stop.send(true);
    Ok(())
}

/// One request's answer on its way out.
pub(crate) struct Outgoing {
    pub correlation_id: i32,
    pub api: ApiKey,
    pub version: i16,
    pub response: Pending,
    /// The frame's bytes, held until it is answered.
    pub permit: Option<OwnedSemaphorePermit>,
    pub started: tokio::time::Instant,
    /// Told once the answer is written.
    pub written: Option<tokio::sync::oneshot::Sender<()>>,
}

/// An answer: ready, or once a future (a produce's commits) resolves.
pub(crate) enum Pending {
    Ready(Box<ResponseKind>),
    Later(BoxFuture<'static, ResponseKind>),
}

/// Why a connection is closed.
enum Closed {
    /// The client closed it between frames.
    ByClient,
    /// The listener is stopping.
    Stopping,
    /// A frame broke a bound or did not decode: the reason, and a metric label.
    Refused(String, &'static str),
}

async fn connection<S>(
    shared: &Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    certificate: Option<Principal>,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (answers, queue) = mpsc::channel::<Outgoing>(MAX_INFLIGHT_REQUESTS);
    let writing = tokio::spawn(
        write_answers(shared.clone(), writer, queue).instrument(tracing::Span::current()),
    );
    let mut session = Session::new(peer, shared.config.tokens.is_none());
    session.principal = certificate;
    let closed = loop {
        let max = if session.authenticated {
            shared.config.max_request_bytes
        } else {
            MAX_UNAUTHENTICATED_FRAME.min(shared.config.max_request_bytes)
        };
        let frame = tokio::select! {
            frame = tokio::time::timeout(IDLE_TIMEOUT, read_frame(shared, &mut reader, max)) => {
                match frame {
                    Ok(frame) => frame,
                    Err(_) => break Closed::Refused(
                        format!("idle for {} s", IDLE_TIMEOUT.as_secs()),
                        "idle",
                    ),
                }
            }
            _ = stopping.wait_for(|s| *s) => break Closed::Stopping,
            // The writer stopped (a client that does not read, an answer that does not
            // encode): nothing more can be answered.
            () = answers.closed() => break Closed::Refused(
                "its answers could not be written".to_string(),
                "write",
            ),
        };
        let (frame, permit) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break Closed::ByClient,
            Err(closed) => break closed,
        };
        let started = tokio::time::Instant::now();
        // Before authenticating, only ApiVersions and SASL are even decoded.
        if !session.authenticated {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            if !ApiKey::try_from(key).is_ok_and(api::allowed_before_authentication) {
                break Closed::Refused(
                    format!(
                        "API key {key} before authenticating: this listener needs SASL (PLAIN \
                         or OAUTHBEARER) with a token first"
                    ),
                    "unauthenticated",
                );
            }
        }
        let (header, request) = match decode(frame) {
            Ok(decoded) => decoded,
            Err(Decoded::Unsupported(correlation_id, version)) => {
                // Kafka's answer to a newer ApiVersions than it knows: v0, with the
                // versions it supports, so that the client falls back.
                let outgoing = Outgoing {
                    correlation_id,
                    api: ApiKey::ApiVersions,
                    version: 0,
                    response: Pending::Ready(Box::new(api::api_versions_unsupported(version))),
                    permit: Some(permit),
                    started,
                    written: None,
                };
                if answers.send(outgoing).await.is_err() {
                    break Closed::ByClient;
                }
                continue;
            }
            Err(Decoded::Refused(reason)) => break Closed::Refused(reason, "malformed"),
        };
        let api = ApiKey::try_from(header.request_api_key).expect("checked by decode");
        let outcome = api::handle(shared, &mut session, &header, request).await;
        let (response, close) = match outcome {
            Outcome::Reply(response) => (Some(response), None),
            Outcome::NoReply => (None, None),
            Outcome::ReplyAndClose(response, reason) => {
                (Some(response), Some((reason, "authentication_failed")))
            }
            Outcome::Close(reason) => (None, Some((reason, "refused_acks_0"))),
        };
        if let Some(response) = response {
            // A fetch answer can be large: the next request is read only once it is
            // written (Kafka mutes a connection while it answers), so a client that does
            // not read holds one at most.
            let (written, wait) = if api == ApiKey::Fetch {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let outgoing = Outgoing {
                correlation_id: header.correlation_id,
                api,
                version: header.request_api_version,
                response,
                permit: Some(permit),
                started,
                written,
            };
            if answers.send(outgoing).await.is_err() {
                break Closed::ByClient;
            }
            if let Some(wait) = wait
                && wait.await.is_err()
            {
                break Closed::Refused("a fetch answer could not be written".to_string(), "write");
            }
        } else {
            shared
                .metrics
                .requests
                .with_label_values(&[api_name(api)])
                .inc();
        }
        if let Some((reason, label)) = close {
            break Closed::Refused(reason, label);
        }
    };
    drop(answers);
    // Answers already due are written before the connection closes.
    let _ = writing.await;
    match closed {
        Closed::ByClient | Closed::Stopping => {
            tracing::debug!("kafka connection closed");
        }
        Closed::Refused(reason, label) => {
            shared
                .metrics
                .connections_refused
                .with_label_values(&[label])
                .inc();
            tracing::info!(%reason, "kafka connection closed");
        }
    }
}

/// Reads one frame of at most `max` bytes: `None` at a clean end of the stream between
/// frames.
async fn read_frame<R: AsyncRead + Unpin>(
    shared: &Shared,
    reader: &mut R,
    max: usize,
) -> Result<Option<(BytesMut, OwnedSemaphorePermit)>, Closed> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Ok(None),
    }
    let length = i32::from_be_bytes(length);
    let length = usize::try_from(length)
        .ok()
        .filter(|len| (MIN_FRAME..=max).contains(len))
        .ok_or_else(|| {
            Closed::Refused(
                format!(
                    "frame length {length} is outside {MIN_FRAME} to {max} bytes \
                     (--kafka-max-request-bytes; {MAX_UNAUTHENTICATED_FRAME} before \
                     authenticating)"
                ),
                "frame_length",
            )
        })?;
    let permit = shared
        .memory
        .clone()
        .acquire_many_owned(length as u32)
        .await
        .map_err(|_| Closed::Stopping)?;
    // Read into uninitialised capacity: zeroing a frame first (up to the request limit)
    // costs as much CPU as everything else a produce does.
    let mut frame = BytesMut::with_capacity(length);
    let read = async {
        let mut rest = (&mut *reader).take(length as u64);
        while frame.len() < length {
            if rest.read_buf(&mut frame).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(FRAME_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(Some((frame, permit))),
        Ok(Err(_)) => Err(Closed::Refused(
            format!("the connection ended in the middle of a frame of {length} bytes"),
            "truncated",
        )),
        Err(_) => Err(Closed::Refused(
            format!(
                "a frame of {length} bytes did not arrive within {} s",
                FRAME_TIMEOUT.as_secs()
            ),
            "timeout",
        )),
    }
}

enum Decoded {
    /// An ApiVersions request of a version this listener does not know: (correlation id,
    /// version).
    Unsupported(i32, i16),
    /// Why the frame cannot be served.
    Refused(String),
}

/// Decodes a frame's header and body, checking its API and version first.
fn decode(frame: BytesMut) -> Result<(RequestHeader, RequestKind), Decoded> {
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api =
        ApiKey::try_from(key).map_err(|_| Decoded::Refused(format!("unknown API key {key}")))?;
    let Some(range) = api::supported(api) else {
        return Err(Decoded::Refused(format!(
            "{api:?} (key {key}) is not implemented by this listener"
        )));
    };
    if !(range.0..=range.1).contains(&version) {
        if api == ApiKey::ApiVersions {
            return Err(Decoded::Unsupported(correlation_id, version));
        }
        return Err(Decoded::Refused(format!(
            "{api:?} version {version} is not supported (versions {} to {})",
            range.0, range.1
        )));
    }
    let mut bytes: Bytes = frame.freeze();
    let header = RequestHeader::decode(&mut bytes, api.request_header_version(version))
        .map_err(|e| Decoded::Refused(format!("{api:?} v{version}: bad request header: {e}")))?;
    let request = RequestKind::decode(api, &mut bytes, version)
        .map_err(|e| Decoded::Refused(format!("{api:?} v{version}: body does not decode: {e}")))?;
    Ok((header, request))
}

/// Writes answers in request order; a produce's answer once its commits resolve.
async fn write_answers<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut writer: W,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    while let Some(outgoing) = queue.recv().await {
        let response = match outgoing.response {
            Pending::Ready(response) => *response,
            Pending::Later(future) => future.await,
        };
        let name = api_name(outgoing.api);
        let frame = match encode(outgoing.correlation_id, outgoing.version, &response) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(api = name, version = outgoing.version, error = %e,
                    "kafka response does not encode; closing the connection");
                return;
            }
        };
        drop(outgoing.permit);
        shared.metrics.requests.with_label_values(&[name]).inc();
        shared
            .metrics
            .latency(name)
            .observe(outgoing.started.elapsed().as_secs_f64());
        let write = async {
            writer.write_all(&frame).await?;
            if queue.is_empty() {
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(
                    api = name,
                    "kafka answer not read within {} s; closing",
                    WRITE_TIMEOUT.as_secs()
                );
                return;
            }
        }
        if let Some(written) = outgoing.written {
            let _ = written.send(());
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// A response frame: length, header, body.
fn encode(correlation_id: i32, version: i16, response: &ResponseKind) -> anyhow::Result<Bytes> {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut frame, response.header_version(version))?;
    response.encode(&mut frame, version)?;
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    Ok(frame.freeze())
}

/// An API's name in metrics and logs.
pub(crate) fn api_name(api: ApiKey) -> &'static str {
    api::name(api)
}
