//! The issuer's signing keys as the store keeps them, and their life cycle.

use serde::Serialize;
use utoipa::ToSchema;

/// Where a signing key is in its life: published before it signs, signing,
/// published after it signed, then gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in the JWKS, not yet signing (instances learn it first).
    Next,
    /// Signs new tokens; exactly one key is current.
    Current,
    /// Published and verifying (its tokens renew), no longer signing.
    Previous,
    /// Neither published nor accepted; its private half is erased.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Previous => "previous",
            KeyState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<KeyState> {
        match s {
            "next" => Some(KeyState::Next),
            "current" => Some(KeyState::Current),
            "previous" => Some(KeyState::Previous),
            "retired" => Some(KeyState::Retired),
            _ => None,
        }
    }

    /// Whether the key is in the JWKS and verifies tokens.
    pub fn is_published(self) -> bool {
        !matches!(self, KeyState::Retired)
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signing key row. The private key is sealed under the master key
/// (associated data: the kid) and never leaves the store unsealed; it is
/// erased (empty) once the key is retired.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// The JOSE `alg`: `RS256` or `EdDSA`.
    pub alg: String,
    pub state: KeyState,
    pub sealed_key: String,
    /// The public half as a JWK (JSON).
    pub public_jwk: String,
    pub created_at: i64,
    /// The earliest time the key may sign.
    pub signs_from: i64,
    pub activated_at: Option<i64>,
    pub deactivated_at: Option<i64>,
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("sealed_key", &"[sealed]")
            .field("created_at", &self.created_at)
            .field("signs_from", &self.signs_from)
            .field("activated_at", &self.activated_at)
            .field("deactivated_at", &self.deactivated_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// A change of the key set, each applied in one transaction with its audit
/// event, conditionally on the states it was computed from (several
/// replicas run the same schedule; one of them wins, the others find
/// nothing to do).
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// The first key set of a store: imported keys or a generated one
    /// (exactly one of them current). Only into an empty table.
    Initial(Vec<SigningKeyRecord>),
    /// A new key that publishes now and signs from its `signs_from`.
    AddNext(SigningKeyRecord),
    /// The next key `kid` signs from now; the current one becomes previous.
    Promote { kid: String },
    /// Emergency: the new key signs at once; the current one is retired.
    ReplaceCurrent(SigningKeyRecord),
    /// A previous key stops verifying.
    Retire { kid: String },
}
