//! The issuer's signing keys: one key set in the store for every replica,
//! each private key sealed under the master key, and their life cycle.
//!
//! A new key is **next**: published in the JWKS for at least the
//! prepublication window before it may sign, so every instance has learnt
//! it before a token carries it. Then it is **current** (the one key that
//! signs) and the key it replaces is **previous** (published, verifying:
//! its tokens still renew). A previous key is **retired** (neither, its
//! private half erased) once every token it signed is past `exp` plus the
//! renewal grace. An emergency rotation makes a new key current at once
//! and retires the old one: its tokens no longer verify.
//!
//! Every replica runs the same schedule ([`maintain`], every poll): each
//! change is conditional on the states it was computed from, so one replica
//! makes it and the others find it made. Each replica re-reads the key set
//! on every poll and swaps its [`LiveKeys`]; it signs only with the current
//! key of the set it read, which it publishes too, and which every replica
//! has published since the key was next.

use std::sync::{Arc, Mutex, RwLock};

use charter_token::keys::{KeyInfo, generate_pem};
use charter_token::{DAY, KeyAlg, KeyError, Keyring, PublicKey, SigningKey};
use serde::Serialize;
use serde_json::json;

use super::{Actor, Error, Licensing, Result};
use crate::config::KeyPolicy;
use crate::db::Store;
use crate::domain::{KeyChange, KeyState, SigningKeyRecord, rfc3339};
use crate::sealed::{MasterKeyError, Sealer};

/// The keys this replica signs and verifies with, swapped when the key set
/// in the store changes. A caller takes one snapshot ([`LiveKeys::get`]) and
/// signs and names the kid from it.
pub struct LiveKeys {
    ring: RwLock<Arc<Keyring>>,
    /// The key set's kids and states as last read.
    seen: Mutex<String>,
}

impl LiveKeys {
    fn new(ring: Keyring, seen: String) -> LiveKeys {
        LiveKeys {
            ring: RwLock::new(Arc::new(ring)),
            seen: Mutex::new(seen),
        }
    }

    /// Keys fixed in memory (tests, embedding): nothing refreshes them.
    pub fn fixed(ring: Keyring) -> LiveKeys {
        LiveKeys::new(ring, String::new())
    }

    /// The keys now.
    pub fn get(&self) -> Arc<Keyring> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, ring: Keyring, seen: String) {
        *self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ring);
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
    }

    fn seen(&self) -> String {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What changes when the key set changes: the kids and their states.
fn fingerprint(rows: &[SigningKeyRecord]) -> String {
    let mut parts: Vec<String> = rows
        .iter()
        .filter(|k| k.state.is_published())
        .map(|k| format!("{}:{}", k.kid, k.state))
        .collect();
    parts.sort();
    parts.join(",")
}

/// The keyring of a key set: the current key, opened with the master key,
/// signs; every published key verifies.
fn keyring(rows: &[SigningKeyRecord], sealer: &Sealer) -> std::result::Result<Keyring, String> {
    let current = rows
        .iter()
        .find(|k| k.state == KeyState::Current)
        .ok_or("the key set has no current key")?;
    let signing = open(current, sealer)?;
    let mut others = Vec::new();
    for k in rows
        .iter()
        .filter(|k| k.state.is_published() && k.kid != current.kid)
    {
        let jwk = serde_json::from_str(&k.public_jwk)
            .map_err(|e| format!("signing key {}: its public JWK does not parse: {e}", k.kid))?;
        let public = PublicKey::from_jwk(&jwk)
            .ok_or_else(|| format!("signing key {}: its public JWK is not usable", k.kid))?;
        others.push(public);
    }
    Ok(Keyring::from_keys(signing, others))
}

/// Opens a key's private half; an error says whether the master key is wrong.
fn open(k: &SigningKeyRecord, sealer: &Sealer) -> std::result::Result<SigningKey, String> {
    let pem = sealer.open_signing_key(&k.sealed_key, &k.kid).ok_or_else(|| {
        format!(
            "signing key {} does not open with this master key: it is not the master key the key set was sealed under",
            k.kid
        )
    })?;
    let key = SigningKey::from_pem(&pem).map_err(|e| format!("signing key {}: {e}", k.kid))?;
    if key.kid() != k.kid {
        return Err(format!(
            "signing key {} holds the private key of {}",
            k.kid,
            key.kid()
        ));
    }
    Ok(key)
}

/// A key row for `pem`, sealed under the master key.
fn record(
    pem: &str,
    sealer: &Sealer,
    state: KeyState,
    now: i64,
    signs_from: i64,
) -> anyhow::Result<SigningKeyRecord> {
    let key = SigningKey::from_pem(pem).map_err(|e| anyhow::anyhow!("{e}"))?;
    let kid = key.kid().to_string();
    Ok(SigningKeyRecord {
        sealed_key: sealer.seal_signing_key(pem, &kid)?,
        public_jwk: serde_json::to_string(key.public().jwk())?,
        alg: key.alg().as_str().to_string(),
        kid,
        state,
        created_at: now,
        signs_from,
        activated_at: (state == KeyState::Current).then_some(now),
        deactivated_at: (state == KeyState::Previous).then_some(now),
        retired_at: None,
    })
}

/// Generates a key of `alg` off the async threads (RSA takes a while).
async fn generate(alg: KeyAlg) -> Result<String> {
    tokio::task::spawn_blocking(move || generate_pem(alg, 2048))
        .await
        .map_err(|e| Error::Sign(format!("key generation stopped: {e}")))?
        .map_err(|e| Error::Sign(e.to_string()))
}

/// The master key and the key set at start: the store's key set, opened
/// with the master key; or, for a store without one, the keys directory's
/// `*.pem` imported (kids unchanged, the one named by `signing` current) or
/// a new key, sealed under the master key (created when there is none).
/// Errors name the master key's file; nothing is overwritten.
pub async fn bootstrap(
    store: &dyn Store,
    keys_dir: &std::path::Path,
    policy: &KeyPolicy,
) -> anyhow::Result<(Arc<Sealer>, LiveKeys)> {
    let path = &policy.master_key_file;
    let mut rows = store.list_signing_keys().await?;
    let sealer = match Sealer::load(path) {
        Ok(s) => s,
        Err(MasterKeyError::Missing(_)) if rows.is_empty() => {
            let s = Sealer::create(path)?;
            tracing::info!(path = %path.display(), "generated the master key that seals signing keys and push credentials");
            s
        }
        Err(MasterKeyError::Missing(_)) => anyhow::bail!(
            "master key {} not found: the signing keys in the database are sealed under a master key; \
             give its file (--master-key-file or the keys directory's master.key)",
            path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if rows.is_empty() {
        let now = charter_token::now();
        let (initial, imported) = initial_keys(keys_dir, &sealer, policy.alg, now).await?;
        let mut audit =
            Actor::system("keys").event("key.import", "signing_key", &initial_current(&initial));
        audit.detail = Some(json!({
            "imported": imported,
            "kids": initial.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        }));
        if !imported {
            audit.action = "key.create".into();
        }
        let change = KeyChange::Initial(initial);
        if store.change_keys(&change, now, &audit).await? {
            if imported {
                tracing::info!(dir = %keys_dir.display(), "imported the keys directory's signing keys into the database; from now on the database's key set is the one that counts");
            } else {
                tracing::info!(kid = %audit.target_id, alg = policy.alg.as_str(), "no signing key found: generated an {} key", policy.alg.as_str());
            }
        }
        // Read back: another replica may have made the first key set.
        rows = store.list_signing_keys().await?;
    }
    for k in rows.iter().filter(|k| k.state.is_published()) {
        open(k, &sealer).map_err(|e| anyhow::anyhow!("master key {}: {e}", path.display()))?;
    }
    let ring = keyring(&rows, &sealer).map_err(|e| anyhow::anyhow!(e))?;
    warn_unimported(keys_dir, &rows);
    Ok((Arc::new(sealer), LiveKeys::new(ring, fingerprint(&rows))))
}

fn initial_current(keys: &[SigningKeyRecord]) -> String {
    keys.iter()
        .find(|k| k.state == KeyState::Current)
        .map(|k| k.kid.clone())
        .unwrap_or_default()
}

/// The first key set: the directory's keys, or one new key.
async fn initial_keys(
    dir: &std::path::Path,
    sealer: &Sealer,
    alg: KeyAlg,
    now: i64,
) -> anyhow::Result<(Vec<SigningKeyRecord>, bool)> {
    let listed = match charter_token::keys::list(dir) {
        Ok(l) => l,
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read the keys directory")),
    };
    if listed.is_empty() {
        let pem = generate(alg).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok((
            vec![record(&pem, sealer, KeyState::Current, now, now)?],
            false,
        ));
    }
    if !listed.iter().any(|k| k.signing) {
        return Err(KeyError::NoSigningKey(listed.len()).into());
    }
    let mut keys = Vec::new();
    for KeyInfo { signing, path, .. } in listed {
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let state = if signing {
            KeyState::Current
        } else {
            KeyState::Previous
        };
        keys.push(record(&pem, sealer, state, now, now)?);
    }
    Ok((keys, true))
}

/// Says so when the keys directory holds a key the store does not: after
/// the first start, the directory is no longer read.
fn warn_unimported(dir: &std::path::Path, rows: &[SigningKeyRecord]) {
    if let Ok(listed) = charter_token::keys::list(dir) {
        for k in listed {
            if !rows.iter().any(|r| r.kid == k.kid) {
                tracing::warn!(kid = %k.kid, path = %k.path.display(), "this key file is not in the database's key set and is not used: keys are imported from the directory only on a first start; rotate with `charter keys rotate --issuer URL`");
            }
        }
    }
}

/// Re-reads the key set and swaps this replica's keys if it changed.
pub async fn refresh(ctx: &Licensing) -> Result<bool> {
    let rows = ctx.store.list_signing_keys().await?;
    refresh_from(ctx, &rows)
}

fn refresh_from(ctx: &Licensing, rows: &[SigningKeyRecord]) -> Result<bool> {
    let seen = fingerprint(rows);
    if seen == ctx.keys.seen() {
        return Ok(false);
    }
    let ring = keyring(rows, &ctx.sealer).map_err(Error::Sign)?;
    tracing::info!(
        signing = ring.signing_key().kid(),
        published = ring.public().len(),
        "the signing key set changed"
    );
    ctx.keys.set(ring, seen);
    Ok(true)
}

/// The scheduled changes, due at `now`: a next key whose prepublication is
/// over becomes current; a previous key whose tokens are all past `exp`
/// plus the renewal grace retires; with `--key-rotation-days`, a next key
/// is made a prepublication window before the current one is due to be
/// replaced. Then this replica's keys follow the key set.
pub async fn maintain(ctx: &Licensing, now: i64) -> Result<()> {
    let policy = &ctx.config.keys;
    let rows = ctx.store.list_signing_keys().await?;
    let actor = Actor::system("keys");
    let current = rows.iter().find(|k| k.state == KeyState::Current);
    let mut changed = false;
    if let Some(next) = rows
        .iter()
        .find(|k| k.state == KeyState::Next && k.signs_from <= now)
    {
        let mut audit = actor.event("key.activate", "signing_key", &next.kid);
        audit.detail = Some(json!({ "previous": current.map(|c| c.kid.as_str()) }));
        let change = KeyChange::Promote {
            kid: next.kid.clone(),
        };
        if ctx.store.change_keys(&change, now, &audit).await? {
            tracing::info!(kid = %next.kid, previous = ?current.map(|c| &c.kid), "a new signing key signs from now on");
            changed = true;
        }
    }
    let lag = i64::try_from(policy.poll.as_secs().saturating_mul(3)).unwrap_or(i64::MAX);
    let grace = ctx.config.renew_grace_days.saturating_mul(DAY);
    for prev in rows.iter().filter(|k| k.state == KeyState::Previous) {
        // Replicas that have not polled since it stopped signing may still
        // sign with it for a moment.
        if prev
            .deactivated_at
            .unwrap_or(prev.created_at)
            .saturating_add(lag)
            > now
        {
            continue;
        }
        let latest = ctx.store.latest_token_exp(&prev.kid).await?;
        if latest.is_some_and(|exp| exp.saturating_add(grace) > now) {
            continue;
        }
        let mut audit = actor.event("key.retire", "signing_key", &prev.kid);
        audit.detail = Some(json!({ "latest_token_exp": latest }));
        let change = KeyChange::Retire {
            kid: prev.kid.clone(),
        };
        if ctx.store.change_keys(&change, now, &audit).await? {
            tracing::info!(kid = %prev.kid, "retired a signing key: every token it signed is past its renewal grace");
            changed = true;
        }
    }
    if let (Some(every), Some(current)) = (policy.rotation_secs, current)
        && !rows.iter().any(|k| k.state == KeyState::Next)
    {
        let due = current
            .activated_at
            .unwrap_or(current.created_at)
            .saturating_add(every);
        if due.saturating_sub(policy.prepublish_secs) <= now {
            let signs_from = due.max(now.saturating_add(policy.prepublish_secs));
            if add_next(ctx, &actor, now, signs_from, true)
                .await?
                .is_some()
            {
                changed = true;
            }
        }
    }
    if changed {
        refresh(ctx).await?;
    } else {
        refresh_from(ctx, &rows)?;
    }
    Ok(())
}

/// Makes a next key that signs from `signs_from`; `None` when there is a
/// next key already.
async fn add_next(
    ctx: &Licensing,
    actor: &Actor,
    now: i64,
    signs_from: i64,
    scheduled: bool,
) -> Result<Option<SigningKeyRecord>> {
    let alg = ctx.config.keys.alg;
    let pem = generate(alg).await?;
    let key = record(&pem, &ctx.sealer, KeyState::Next, now, signs_from)
        .map_err(|e| Error::Sign(e.to_string()))?;
    let mut audit = actor.event("key.rotate", "signing_key", &key.kid);
    audit.detail = Some(json!({
        "alg": key.alg,
        "signs_from": rfc3339::format(signs_from),
        "scheduled": scheduled,
    }));
    if !ctx
        .store
        .change_keys(&KeyChange::AddNext(key.clone()), now, &audit)
        .await?
    {
        return Ok(None);
    }
    tracing::info!(kid = %key.kid, alg = %key.alg, signs_from = %rfc3339::format(signs_from), "a new signing key is published; it signs after its prepublication");
    Ok(Some(key))
}

/// A key as the API shows it: no private half, ever.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub kid: String,
    /// `RS256` or `EdDSA`.
    pub alg: String,
    pub state: KeyState,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// When it signs (or may sign: a next key signs from then on).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub signs_from: i64,
    #[serde(with = "rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activated_at: Option<i64>,
    #[serde(with = "rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deactivated_at: Option<i64>,
    #[serde(with = "rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<i64>,
}

impl From<&SigningKeyRecord> for KeyView {
    fn from(k: &SigningKeyRecord) -> Self {
        KeyView {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            state: k.state,
            created_at: k.created_at,
            signs_from: k.signs_from,
            activated_at: k.activated_at,
            deactivated_at: k.deactivated_at,
            retired_at: k.retired_at,
        }
    }
}

/// Every key of the set, newest first.
pub async fn list(ctx: &Licensing) -> Result<Vec<KeyView>> {
    Ok(ctx
        .store
        .list_signing_keys()
        .await?
        .iter()
        .map(KeyView::from)
        .collect())
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rotation {
    /// The new key.
    pub key: KeyView,
    /// The key it replaces (retired at once by an emergency rotation).
    pub replaces: Option<String>,
    /// What happens next, in words.
    pub message: String,
}

/// Rotates the signing key. Normally the new key is published now and
/// signs after the prepublication window (the scheduler promotes it; a
/// rotation while a key is waiting is a conflict). `immediate` (for a
/// compromised key) makes the new key sign now and retires the current one
/// at once: tokens it signed are refused from then on.
pub async fn rotate(ctx: &Licensing, actor: &Actor, immediate: bool) -> Result<Rotation> {
    let now = charter_token::now();
    let rows = ctx.store.list_signing_keys().await?;
    let current = rows
        .iter()
        .find(|k| k.state == KeyState::Current)
        .map(|k| k.kid.clone());
    if !immediate {
        if let Some(next) = rows.iter().find(|k| k.state == KeyState::Next) {
            return Err(Error::Conflict(format!(
                "key {} is already published and signs from {}; rotate again after that, or use immediate=true for a compromised key",
                next.kid,
                rfc3339::format(next.signs_from)
            )));
        }
        let signs_from = now.saturating_add(ctx.config.keys.prepublish_secs);
        let Some(key) = add_next(ctx, actor, now, signs_from, false).await? else {
            return Err(Error::Conflict(
                "another rotation made a next key at the same time; list the keys".into(),
            ));
        };
        refresh(ctx).await?;
        return Ok(Rotation {
            message: format!(
                "key {} is published in the JWKS now and signs from {} (after the {} h prepublication); {} keeps signing until then and verifying after",
                key.kid,
                rfc3339::format(key.signs_from),
                ctx.config.keys.prepublish_secs / 3600,
                current.as_deref().unwrap_or("the current key"),
            ),
            key: KeyView::from(&key),
            replaces: current,
        });
    }
    let pem = generate(ctx.config.keys.alg).await?;
    let key = record(&pem, &ctx.sealer, KeyState::Current, now, now)
        .map_err(|e| Error::Sign(e.to_string()))?;
    let mut audit = actor.event("key.rotate", "signing_key", &key.kid);
    audit.detail = Some(json!({ "alg": key.alg, "immediate": true, "retired": current }));
    if !ctx
        .store
        .change_keys(&KeyChange::ReplaceCurrent(key.clone()), now, &audit)
        .await?
    {
        return Err(Error::Conflict(
            "another rotation replaced the current key at the same time; list the keys".into(),
        ));
    }
    tracing::warn!(kid = %key.kid, retired = ?current, "emergency rotation: a new key signs now and the old one is retired");
    refresh(ctx).await?;
    Ok(Rotation {
        message: format!(
            "key {} signs now; {} is retired: tokens it signed are refused from now on (renewal answers 401, and instances stop trusting them after their next JWKS refresh), so those instances need a new token",
            key.kid,
            current.as_deref().unwrap_or("the old key"),
        ),
        key: KeyView::from(&key),
        replaces: current,
    })
}
