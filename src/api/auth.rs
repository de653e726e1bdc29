//! Who is calling the portal API: the [`Principal`] extractor, and the
//! actions each endpoint requires. Today only the server admin (HTTP Basic);
//! service accounts and roles extend this one extractor.

use std::collections::HashSet;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;

use super::AppState;
use super::error::ApiError;

/// What an endpoint does, as a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    LicensingRead,
    LicensingWrite,
    LicensingDelete,
}

/// An authenticated caller of the portal API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The server admin: may do everything.
    Admin { user: String },
}

impl Principal {
    /// Refuses with 403 unless the caller may do `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        match self {
            Principal::Admin { .. } => {
                let _ = action;
                Ok(())
            }
        }
    }

    /// A name for logs and audit.
    pub fn name(&self) -> &str {
        match self {
            Principal::Admin { user } => user,
        }
    }
}

/// The server admin's credentials: an argon2 hash, never the password.
pub struct AdminAuth {
    user: String,
    hash: String,
    /// SHA-256 of passwords already verified, so argon2 runs once per password.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl AdminAuth {
    pub fn new(user: String, hash: String) -> Self {
        AdminAuth {
            user,
            hash,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// An argon2id PHC string for `password`.
    pub fn hash_password(password: &str) -> anyhow::Result<String> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| anyhow::anyhow!("no randomness"))?;
        Ok(Argon2::default()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string())
    }

    fn check(&self, user: &str, password: &str) -> bool {
        let digest: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        // Compare the user in constant time too, and always check the password,
        // so the answer says nothing about which part was wrong.
        let user_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            user.as_bytes(),
            self.user.as_bytes(),
        )
        .is_ok();
        let cached = self.verified.lock().is_ok_and(|v| v.contains(&digest));
        let password_ok = cached
            || Argon2::default()
                .verify_password(password.as_bytes(), self.hash.as_str())
                .is_ok();
        if password_ok
            && !cached
            && let Ok(mut v) = self.verified.lock()
        {
            v.insert(digest);
        }
        user_ok && password_ok
    }
}

fn unauthorized() -> ApiError {
    let mut e = ApiError::unauthorized("invalid or missing credentials");
    e.challenge = Some("Basic realm=\"charter\"");
    e
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let (scheme, value) = header.split_once(' ').ok_or_else(unauthorized)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthorized());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(unauthorized)?;
        let (user, password) = decoded.split_once(':').ok_or_else(unauthorized)?;
        let admin = state.admin.clone();
        let (user, password) = (user.to_string(), password.to_string());
        // argon2 is deliberately slow: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || admin.check(&user, &password).then_some(user))
            .await
            .map_err(ApiError::internal)?;
        match ok {
            Some(user) => Ok(Principal::Admin { user }),
            None => Err(unauthorized()),
        }
    }
}
