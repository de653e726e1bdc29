//! Types that cross the wire between the issuer and the client
//! (`POST /api/tokens/renew`), shared so that both sides agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Claims;

/// What an instance reports it uses, e.g. `{"users": 12, "shards": 3}`.
pub type Usage = BTreeMap<String, i64>;

/// Body of `POST /api/tokens/renew` (optional: an empty body means no report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RenewRequest {
    /// The host's current usage, stored on the instance by the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Answer of the renew and issue endpoints: the token and its claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub token: String,
    pub claims: Claims,
}

/// The error body of every Charter endpoint: `{"message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub message: String,
}
