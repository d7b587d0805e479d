//! The agent's HTTP port: plaintext, or — when the agent serves TLS — both TLS and
//! plaintext on the one port, told apart by the connection's first byte (a TLS
//! handshake starts with 0x16, an HTTP request with a letter).
//!
//! Invariants:
//! - over TLS every route is served; over plaintext on a TLS agent only `/metrics` and
//!   `/health` are (so Prometheus scrapes keep working), and every other path is
//!   redirected to `https://` on the same port: console pages, tokens and cookies never
//!   cross the network in the clear when the agent has a certificate;
//! - at most [`MAX_CONNECTIONS`] connections are open; a handshake that has not finished
//!   in [`HANDSHAKE_TIMEOUT`] is dropped, so slow clients cannot hold the accept loop, and
//!   a connection that sends nothing for [`IDLE_TIMEOUT`] is closed, so idle keep-alive
//!   connections cannot hold every place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Connections the HTTP port keeps open at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to finish its TLS handshake (or send its first byte).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may send nothing before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection's byte stream, plaintext or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One accepted connection (plaintext or TLS), holding its place among the
/// [`MAX_CONNECTIONS`].
pub struct Connection {
    io: Box<dyn Stream>,
    /// When the connection is closed unless it sends something first.
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.idle.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "idle HTTP connection"),
            )),
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Who is on the other end, and over what.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub address: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        *stream.remote_addr()
    }
}

/// The HTTP port's listener: accepts, sniffs and (for TLS) handshakes off the accept loop,
/// and hands axum connections ready to speak HTTP.
pub struct HttpListener {
    ready: mpsc::Receiver<(Connection, Peer)>,
    local: SocketAddr,
}

impl HttpListener {
    /// Starts accepting on `listener`; with `tls`, connections that open with a TLS
    /// handshake are served over TLS.
    pub fn new(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tls.map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(accept_loop(listener, acceptor, sender));
        Self { ready, local }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    ready: mpsc::Sender<(Connection, Peer)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, open(stream, acceptor)).await;
            match opened {
                Ok(Ok((io, tls))) => {
                    let connection = Connection {
                        io,
                        idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
                        _permit: permit,
                    };
                    let _ = ready.send((connection, Peer { address, tls })).await;
                }
                Ok(Err(e)) => tracing::debug!(%address, error = %e, "HTTP connection refused"),
                Err(_) => tracing::debug!(%address, "HTTP connection: no handshake in time"),
            }
        });
    }
}

/// The connection as HTTP will read it: through TLS when it opens with a handshake and
/// the agent has a certificate.
async fn open(
    stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<(Box<dyn Stream>, bool)> {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        return Ok((Box::new(stream), false));
    };
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    if n == 1 && first[0] == 0x16 {
        let tls = acceptor.accept(stream).await?;
        Ok((Box::new(tls), true))
    } else {
        Ok((Box::new(stream), false))
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Connection;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop ended (its listener failed for good): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            address: self.local,
            tls: false,
        })
    }
}

/// Paths served over plaintext even when the agent has TLS: what scrapers and probes
/// read, which carries no secrets.
fn plaintext_allowed(path: &str) -> bool {
    path == "/metrics" || path == "/health"
}

/// Middleware: on an agent with TLS, a plaintext request for anything but `/metrics` and
/// `/health` is redirected to the same URL over `https://`.
pub async fn require_tls(
    tls_available: bool,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let over_tls = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|peer| peer.0.tls);
    if !tls_available || over_tls || plaintext_allowed(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this agent serves its console over TLS: use https://",
        )
            .into_response();
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    Redirect::temporary(&format!("https://{host}{path}")).into_response()
}

/// Serves `app` on `listener` (TLS as [`HttpListener`] says) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls_available = tls.is_some();
    let app = app.layer(axum::middleware::from_fn(move |request, next| {
        require_tls(tls_available, request, next)
    }));
    axum::serve(
        HttpListener::new(listener, tls),
        app.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
