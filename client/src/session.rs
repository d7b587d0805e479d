//! One `ProduceSession` stream per producer: requests are appended by the agent in the
//! order they are sent on it, so lanes may keep several requests in flight without
//! reordering a partition's records.
//!
//! The stream is opened on first use and reopened on the next use after it broke (agent
//! restart, network). A request registered on a stream that broke is answered with the
//! error that broke it; none is left unanswered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Transport;
use strata_proto::v1 as pb;
use strata_proto::v1::log_client::LogClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{Error, Result};

type Reply = oneshot::Sender<Result<pb::ProduceResponse>>;

/// The producer's session, reopened as needed.
#[derive(Debug)]
pub(crate) struct Session {
    log: LogClient<Transport>,
    open: Mutex<Option<Arc<OpenSession>>>,
}

#[derive(Debug)]
struct OpenSession {
    requests: mpsc::UnboundedSender<pb::ProduceSessionRequest>,
    pending: Mutex<HashMap<u64, Reply>>,
    next_sequence: AtomicU64,
    broken: AtomicBool,
}

impl OpenSession {
    /// Marks the stream broken, then answers everything pending with `error`.
    fn fail_all(&self, error: Error) {
        self.broken.store(true, Ordering::SeqCst);
        let pending: Vec<Reply> = self
            .pending
            .lock()
            .expect("session lock")
            .drain()
            .map(|(_, reply)| reply)
            .collect();
        for reply in pending {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

impl Session {
    pub(crate) fn new(log: LogClient<Transport>) -> Self {
        Self {
            log,
            open: Mutex::new(None),
        }
    }

    fn current(&self) -> Arc<OpenSession> {
        let mut open = self.open.lock().expect("session lock");
        if let Some(session) = open.as_ref().filter(|s| !s.broken.load(Ordering::SeqCst)) {
            return session.clone();
        }
        let (requests, inbound) = mpsc::unbounded_channel();
        let session = Arc::new(OpenSession {
            requests,
            pending: Mutex::new(HashMap::new()),
            next_sequence: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        });
        tokio::spawn(run_session(
            self.log.clone(),
            session.clone(),
            UnboundedReceiverStream::new(inbound),
        ));
        *open = Some(session.clone());
        session
    }

    /// Sends a request; the receiver resolves with its answer.
    pub(crate) fn send(
        &self,
        request: pb::ProduceRequest,
    ) -> oneshot::Receiver<Result<pb::ProduceResponse>> {
        let (reply, answer) = oneshot::channel();
        let session = self.current();
        let sequence = session.next_sequence.fetch_add(1, Ordering::Relaxed);
        session
            .pending
            .lock()
            .expect("session lock")
            .insert(sequence, reply);
        let sent = session.requests.send(pb::ProduceSessionRequest {
            sequence,
            request: Some(request),
        });
        // fail_all marks the session broken before draining, so a request registered
        // after the drain sees the mark here and is answered.
        let closed = sent.is_err() || session.broken.load(Ordering::SeqCst);
        let orphan = closed
            .then(|| {
                session
                    .pending
                    .lock()
                    .expect("session lock")
                    .remove(&sequence)
            })
            .flatten();
        if let Some(reply) = orphan {
            let _ = reply.send(Err(Error::Status(tonic::Status::unavailable(
                "produce session closed; retry",
            ))));
        }
        answer
    }
}

async fn run_session(
    mut log: LogClient<Transport>,
    session: Arc<OpenSession>,
    requests: UnboundedReceiverStream<pb::ProduceSessionRequest>,
) {
    let mut responses = match log.produce_session(requests).await {
        Ok(response) => response.into_inner(),
        Err(status) => return session.fail_all(Error::Status(status)),
    };
    loop {
        match responses.message().await {
            Ok(Some(message)) => {
                let reply = session
                    .pending
                    .lock()
                    .expect("session lock")
                    .remove(&message.sequence);
                let Some(reply) = reply else { continue };
                let answer = match message.response {
                    Some(response) if message.error_code == 0 => Ok(response),
                    _ => {
                        let mut trailers = tonic::metadata::MetadataMap::new();
                        for (key, value) in message.error_trailers {
                            if let (Ok(key), Ok(value)) = (
                                key.parse::<tonic::metadata::AsciiMetadataKey>(),
                                value.parse(),
                            ) {
                                trailers.insert(key, value);
                            }
                        }
                        Err(Error::Status(tonic::Status::with_metadata(
                            tonic::Code::from_i32(message.error_code),
                            message.error_message,
                            trailers,
                        )))
                    }
                };
                let _ = reply.send(answer);
            }
            Ok(None) => {
                return session.fail_all(Error::Status(tonic::Status::unavailable(
                    "produce session ended; retry",
                )));
            }
            Err(status) => return session.fail_all(Error::Status(status)),
        }
    }
}
