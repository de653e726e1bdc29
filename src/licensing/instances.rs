//! Instances: the installations bound to a license, and how tokens reach them.

use charter_token::{InstanceUrl, now};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Actor, Error, Licensing, Result, check_version, retry_stale};
use crate::db::PushSettings;
use crate::domain::{Dialect, Instance, Listing, Page, check_renewable};
use crate::sealed::Credentials;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// The instance's root URL (http or https); stored with a trailing `/`.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://[^\\s]+$", max_length = 2048)]
    pub url: String,
    /// Default `grafana`.
    pub dialect: Option<Dialect>,
    /// Default false.
    pub push_enabled: Option<bool>,
    /// How the issuer authenticates when it pushes; stored encrypted, never shown.
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstancePatch {
    pub dialect: Option<Dialect>,
    pub push_enabled: Option<bool>,
    /// New push credentials; `null` removes them.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<Credentials>)]
    pub credentials: Option<Option<Credentials>>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Parses an instance URL, or an error naming the field.
pub fn parse_url(field: &str, url: &str) -> Result<InstanceUrl> {
    InstanceUrl::parse(url).map_err(|e| Error::invalid(field, e))
}

/// Checks and seals push credentials for the instance `id` at `url`.
fn seal(ctx: &Licensing, c: &Credentials, id: &str, url: &str) -> Result<String> {
    let check = |field: &str, v: &str| -> Result<()> {
        if v.is_empty() || v.len() > 4096 || v.chars().any(char::is_control) {
            return Err(Error::invalid(field, "must be 1-4096 printable characters"));
        }
        Ok(())
    };
    match c {
        Credentials::Basic { username, password } => {
            check("credentials.username", username)?;
            if username.contains(':') {
                return Err(Error::invalid(
                    "credentials.username",
                    "must not contain ':'",
                ));
            }
            check("credentials.password", password)?;
        }
        Credentials::Bearer { token } => check("credentials.token", token)?,
    }
    ctx.sealer
        .seal(c, id, url)
        .map_err(|e| Error::Store(crate::db::StoreError::Internal(format!("sealing: {e}"))))
}

/// A new, unbound instance record.
pub fn new_instance(
    lid: &str,
    url: &InstanceUrl,
    dialect: Dialect,
    push_enabled: bool,
    t: i64,
) -> Instance {
    Instance {
        id: uuid::Uuid::now_v7().to_string(),
        lid: lid.to_string(),
        url: url.to_string(),
        dialect,
        push_enabled,
        last_jti: None,
        last_issued_at: None,
        next_renewal_at: None,
        usage: None,
        usage_reported_at: None,
        token_expires_at: None,
        has_credentials: false,
        // With push on, the first token is pushed right away.
        push_next_at: push_enabled.then_some(t),
        push_attempts: 0,
        push_last_error: None,
        push_last_ok_at: None,
        push_at_risk: false,
        removal_pending: false,
        push_pending_jti: None,
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

pub async fn get(ctx: &Licensing, lid: &str, id: &str) -> Result<Instance> {
    ctx.store
        .get_instance(lid, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("instance {id} of license {lid} not found")))
}

pub async fn list(ctx: &Licensing, lid: &str, page: &Page) -> Result<Listing<Instance>> {
    super::licenses::get(ctx, lid).await?;
    Ok(ctx.store.list_instances(lid, page).await?)
}

/// Binds an instance with its credentials, in one write.
pub async fn bind(
    ctx: &Licensing,
    actor: &Actor,
    lid: &str,
    input: NewInstance,
) -> Result<Instance> {
    let url = parse_url("url", &input.url)?;
    let instance = new_instance(
        lid,
        &url,
        input.dialect.unwrap_or(Dialect::Grafana),
        input.push_enabled.unwrap_or(false),
        now(),
    );
    let sealed = input
        .credentials
        .as_ref()
        .map(|c| seal(ctx, c, &instance.id, &instance.url))
        .transpose()?;
    let mut event = actor.event("instance.bind", "instance", &instance.id);
    event.detail = Some(json!({
        "lid": lid,
        "url": instance.url,
        "dialect": instance.dialect.as_str(),
        "push_enabled": instance.push_enabled,
        "credentials": if sealed.is_some() { "set" } else { "none" },
    }));
    event.events.push(super::events::instance_bound(&instance));
    let bound = ctx
        .store
        .bind_instance(&instance, sealed.as_deref(), &event)
        .await
        .map_err(|e| match e {
            crate::db::StoreError::NotActive { lid, .. } => {
                Error::Conflict(format!("license {lid} is revoked"))
            }
            e => e.into(),
        })?;
    tracing::info!(lid = %lid, instance = %bound.url, by = %actor.name, "instance bound");
    Ok(bound)
}

/// Changes how tokens reach an instance: dialect, push, credentials.
pub async fn update(
    ctx: &Licensing,
    actor: &Actor,
    lid: &str,
    id: &str,
    patch: InstancePatch,
    if_match: Option<i64>,
) -> Result<Instance> {
    let _turn = ctx.locks.lock(format!("instance:{id}")).await;
    retry_stale(if_match, || async {
        let old = get(ctx, lid, id).await?;
        check_version("instance", if_match, old.version)?;
        let credentials = match &patch.credentials {
            Some(Some(c)) => Some(Some(seal(ctx, c, id, &old.url)?)),
            Some(None) => Some(None),
            None => None,
        };
        let t = now();
        let mut settings = PushSettings {
            dialect: patch.dialect.unwrap_or(old.dialect),
            push_enabled: patch.push_enabled.unwrap_or(old.push_enabled),
            push_next_at: old.push_next_at,
            push_attempts: old.push_attempts,
            credentials,
        };
        if settings.push_enabled && !old.push_enabled {
            // Turned on: push the current terms now.
            settings.push_next_at = Some(t);
            settings.push_attempts = 0;
        }
        let mut changes = serde_json::Map::new();
        let mut note = |field: &str, old: Value, new: Value| {
            if old != new {
                changes.insert(field.into(), json!({"old": old, "new": new}));
            }
        };
        note("dialect", json!(old.dialect), json!(settings.dialect));
        note(
            "push_enabled",
            json!(old.push_enabled),
            json!(settings.push_enabled),
        );
        if let Some(c) = &settings.credentials {
            // What happened to them, never their values.
            changes.insert(
                "credentials".into(),
                json!(if c.is_some() { "set" } else { "cleared" }),
            );
        }
        let mut event = actor.event("instance.update", "instance", id);
        event.detail = Some(json!({"lid": lid, "url": old.url, "changes": changes}));
        Ok(ctx
            .store
            .update_push_settings(lid, id, &settings, old.version, t, &event)
            .await?)
    })
    .await
}

/// Unbinds an instance, freeing its place; its renewals are refused after.
pub async fn unbind(ctx: &Licensing, actor: &Actor, lid: &str, id: &str) -> Result<()> {
    let mut event = actor.event("instance.unbind", "instance", id);
    event.detail = Some(json!({"lid": lid}));
    let url = ctx.store.get_instance(lid, id).await?.map(|i| i.url);
    event
        .events
        .push(super::events::instance_unbound(lid, id, url.as_deref()));
    if !ctx.store.unbind_instance(lid, id, &event).await? {
        return Err(Error::NotFound(format!(
            "instance {id} of license {lid} not found"
        )));
    }
    tracing::info!(lid = %lid, instance = %id, by = %actor.name, "instance unbound");
    Ok(())
}

/// Pushes a fresh token (or the pending removal) to the instance now and
/// returns it with the outcome in its push fields.
pub async fn push_now(ctx: &Licensing, actor: &Actor, lid: &str, id: &str) -> Result<Instance> {
    let i = get(ctx, lid, id).await?;
    if !i.push_enabled {
        return Err(Error::Conflict(format!(
            "push is not enabled for instance {id}"
        )));
    }
    let license = super::licenses::get(ctx, lid).await?;
    if !i.removal_pending {
        check_renewable(&license, now()).map_err(|e| Error::Conflict(e.to_string()))?;
    }
    let Some(delivered) = super::push::push_one(ctx, lid, id).await? else {
        return Err(Error::Conflict(format!(
            "instance {id} is being pushed by another run; try again"
        )));
    };
    let mut event = actor.event("instance.push", "instance", id);
    event.detail = Some(json!({"lid": lid, "delivered": delivered}));
    if let Err(e) = ctx.store.insert_audit(&event).await {
        tracing::error!(error = %e, "cannot write the audit event of a push");
    }
    get(ctx, lid, id).await
}
