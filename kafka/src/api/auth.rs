//! SaslHandshake and SaslAuthenticate: one round of PLAIN or OAUTHBEARER (see
//! [`crate::sasl`]). A refused authentication is answered, then the connection closes.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;

use super::{Context, Outcome, Session, str_bytes};
use crate::sasl::{MECHANISMS, Mechanism};
use crate::server::Pending;

/// SaslHandshake: picks the mechanism.
pub(crate) fn handshake(
    cx: &Context<'_>,
    session: &mut Session,
    request: SaslHandshakeRequest,
) -> ResponseKind {
    let mut response = SaslHandshakeResponse::default();
    response.mechanisms = MECHANISMS.iter().map(|m| str_bytes(*m)).collect();
    match Mechanism::parse(request.mechanism.as_str()) {
        Some(mechanism) => session.mechanism = Some(mechanism),
        None => response.error_code = cx.error(ResponseError::UnsupportedSaslMechanism),
    }
    ResponseKind::SaslHandshake(response)
}

/// SaslAuthenticate: checks the client's message; on success the connection may call
/// every API.
pub(crate) fn authenticate(
    cx: &Context<'_>,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> Outcome {
    let mut response = SaslAuthenticateResponse::default();
    let refuse = |mut response: SaslAuthenticateResponse, message: String| {
        response.error_code = cx.error(ResponseError::SaslAuthenticationFailed);
        response.error_message = Some(str_bytes(&message));
        cx.shared.agent.metrics().auth_refused.inc();
        Outcome::ReplyAndClose(
            Pending::Ready(Box::new(ResponseKind::SaslAuthenticate(response))),
            format!("SASL authentication refused: {message}"),
        )
    };
    let Some(mechanism) = session.mechanism else {
        return refuse(
            response,
            "SaslAuthenticate before SaslHandshake: name a mechanism (PLAIN or OAUTHBEARER) first"
                .to_string(),
        );
    };
    match crate::sasl::authenticate(
        mechanism,
        &request.auth_bytes,
        cx.shared.config.tokens.as_ref(),
    ) {
        Ok(principal) => {
            tracing::debug!(%principal, peer = %session.peer, "kafka client authenticated");
            session.principal = Some(principal);
            session.authenticated = true;
            if mechanism == Mechanism::OAuthBearer {
                // RFC 7628: the server's final message is empty.
                response.auth_bytes = bytes::Bytes::new();
            }
            Outcome::Reply(Pending::Ready(Box::new(ResponseKind::SaslAuthenticate(
                response,
            ))))
        }
        Err(message) => refuse(response, message),
    }
}
