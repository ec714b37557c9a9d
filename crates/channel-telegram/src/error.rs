//! How grammers errors become [`ChannelError`]s the engine can act on.

use std::time::Duration;

use channel_core::{ChannelError, Fault, FaultKind};
use grammers_mtsender::InvocationError;

/// RPC error names that mean the session is gone: log in again.
const NEEDS_LOGIN: &[&str] = &[
    "AUTH_KEY_UNREGISTERED",
    "AUTH_KEY_INVALID",
    "AUTH_KEY_PERM_EMPTY",
    "SESSION_REVOKED",
    "SESSION_EXPIRED",
    "USER_DEACTIVATED",
    "USER_DEACTIVATED_BAN",
];

/// RPC error names that ask us to wait (the value is the number of seconds).
const WAITS: &[&str] = &["FLOOD_WAIT", "SLOWMODE_WAIT", "FLOOD_PREMIUM_WAIT"];

/// Classifies a grammers error.
///
/// * `FLOOD_WAIT_N`, `SLOWMODE_WAIT_N` → [`ChannelError::RateLimited`] with N seconds.
/// * 401 and `AUTH_KEY_UNREGISTERED`, `SESSION_REVOKED`… → [`ChannelError::NeedsLogin`].
/// * `PEER_FLOOD` and other 400/403 errors → [`ChannelError::Permanent`].
/// * Server errors (500), I/O, transport and dropped requests → [`ChannelError::Transient`].
pub fn classify(error: &InvocationError) -> ChannelError {
    match error {
        InvocationError::Rpc(rpc) => {
            if WAITS.contains(&rpc.name.as_str()) || rpc.code == 420 {
                let secs = rpc.value.unwrap_or(1).max(1);
                return ChannelError::RateLimited { retry_after: Duration::from_secs(secs.into()) };
            }
            if rpc.code == 401 || NEEDS_LOGIN.contains(&rpc.name.as_str()) {
                return ChannelError::needs_login(Fault::new(
                    FaultKind::Authentication,
                    rpc.name.clone(),
                ));
            }
            match rpc.code {
                400 | 403 | 406 => {
                    ChannelError::permanent(Fault::new(FaultKind::Server, rpc.name.clone()))
                }
                _ => ChannelError::transient(Fault::new(
                    FaultKind::Server,
                    format!("{} {}", rpc.code, rpc.name),
                )),
            }
        }
        InvocationError::Session(e) => {
            ChannelError::transient(Fault::new(FaultKind::Other, format!("session: {e}")))
        }
        InvocationError::Io(e) => ChannelError::transient(Fault::new(
            FaultKind::Network,
            format!("the connection to Telegram failed: {e}"),
        )),
        InvocationError::Dropped(why) => ChannelError::transient(Fault::new(
            FaultKind::Network,
            format!("the request was dropped with its connection: {why}"),
        )),
        InvocationError::Deserialize(e) => ChannelError::transient(Fault::new(
            FaultKind::Protocol,
            format!("Telegram's answer did not parse: {e}"),
        )),
        InvocationError::Transport(e) => ChannelError::transient(Fault::new(
            FaultKind::Protocol,
            format!("MTProto transport: {e}"),
        )),
        other => ChannelError::transient(Fault::new(FaultKind::Other, other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_mtsender::RpcError;

    fn rpc(code: i32, message: &str) -> InvocationError {
        InvocationError::Rpc(RpcError::from(grammers_tl_types::types::RpcError {
            error_code: code,
            error_message: message.into(),
        }))
    }

    #[test]
    fn flood_and_slowmode_waits_carry_their_seconds() {
        assert_eq!(
            classify(&rpc(420, "FLOOD_WAIT_31")),
            ChannelError::RateLimited { retry_after: Duration::from_secs(31) }
        );
        assert_eq!(
            classify(&rpc(400, "SLOWMODE_WAIT_5")),
            ChannelError::RateLimited { retry_after: Duration::from_secs(5) }
        );
    }

    #[test]
    fn revoked_sessions_need_a_login() {
        for (code, name) in [(401, "AUTH_KEY_UNREGISTERED"), (401, "SESSION_REVOKED"), (401, "X")] {
            assert!(matches!(classify(&rpc(code, name)), ChannelError::NeedsLogin(_)), "{name}");
        }
    }

    #[test]
    fn peer_flood_is_permanent_and_server_errors_are_transient() {
        assert!(matches!(classify(&rpc(400, "PEER_FLOOD")), ChannelError::Permanent(_)));
        assert!(matches!(classify(&rpc(500, "INTERNAL")), ChannelError::Transient(_)));
        assert!(classify(&InvocationError::Dropped("x")).is_transient());
    }
}
