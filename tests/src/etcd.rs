//! etcd faults: a private etcd process a test may restart, and a TCP proxy in front of
//! etcd that a test may cut and restore, so that one agent loses etcd while the others
//! keep it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::free_port;

/// An etcd server of one test, on its own ports and data directory (kept across
/// restarts, as a real restart keeps it).
#[derive(Debug)]
pub struct EtcdProcess {
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl EtcdProcess {
    /// Starts etcd (the `etcd` binary `scripts/install-test-deps.sh` installed) and waits
    /// until it answers.
    pub fn start() -> Self {
        let mut etcd = Self {
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("etcd data dir"),
            child: None,
        };
        etcd.start_again();
        etcd
    }

    /// Its client endpoint, `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts it again after [`Self::stop`], on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.log()).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "strata-fault"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("strata-fault={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (run scripts/install-test-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen within 20 s:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops etcd (SIGKILL: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill etcd");
            child.wait().expect("reap etcd");
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy on its own port in front of an etcd endpoint. [`EtcdProxy::cut`] closes
/// every connection through it and refuses new ones until [`EtcdProxy::restore`].
#[derive(Debug)]
pub struct EtcdProxy {
    port: u16,
    target: String,
    forwarding: Option<JoinHandle<()>>,
}

impl EtcdProxy {
    /// A proxy to `target` (`host:port`), forwarding. Call within a tokio runtime.
    pub async fn start(target: &str) -> Self {
        let mut proxy = Self {
            port: free_port(),
            target: target.to_string(),
            forwarding: None,
        };
        proxy.restore().await;
        proxy
    }

    /// The endpoint to give the agent, `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(forwarding) = self.forwarding.take() {
            // Dropping the task drops its JoinSet, which aborts every connection.
            forwarding.abort();
        }
    }

    /// Forwards again.
    pub async fn restore(&mut self) {
        self.cut();
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                // The cut listener's port may take a moment to free.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let target = self.target.clone();
        self.forwarding = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for EtcdProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
