//! Bearer tokens → actors, and what each actor may see.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::cases::{Actor, Role};

/// A configured token: its SHA-256 (hex) and who it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A label for logs (`dispatcher-desk-1`).
    pub name: String,
    /// SHA-256 of the token, 64 hex digits (`hub token-hash` prints it).
    pub token_sha256: String,
    /// Role and subject (the department id or worker id for those roles).
    #[serde(flatten)]
    pub actor: Actor,
}

/// SHA-256 of a token as lowercase hex, as stored in the configuration.
pub fn hash_token(token: &str) -> String {
    hmac_sha256::Hash::hash(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The authenticated caller.
pub(super) struct Caller(pub(super) Actor);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let actor = state
            .tokens
            .get(&hash_token(token.trim()))
            .ok_or(ApiError::Unauthorized)?;
        if actor.role == Role::System {
            return Err(ApiError::Unauthorized);
        }
        Ok(Caller(actor.clone()))
    }
}
