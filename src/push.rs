//! Renewal push: a scheduled job claims instances whose renewal is due,
//! issues each a fresh token (reason `push`) and delivers it in the
//! instance's dialect; revocations are delivered the same way. Claims are
//! leases in the database, so several replicas never push the same renewal
//! and a replica that dies mid-push loses nothing: its lease expires and
//! another one delivers. A token issued but not confirmed delivered is
//! redelivered as is, not reissued.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use charter_token::{DAY, now};
use reqwest::Method;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use crate::api::AppState;
use crate::db::PushJob;
use crate::domain::{Dialect, Instance, License, TokenReason, check_renewable};
use crate::issuance;
use crate::sealed::Credentials;

/// Settings of the push job.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// How often the job runs; zero disables it.
    pub interval: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
    pub lease: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Refuse to deliver to loopback, private and link-local addresses.
    pub refuse_private: bool,
    /// Instances claimed per database round trip.
    pub batch: i64,
}

/// The pusher's own state: its HTTP client, its lease owner id, and a lock
/// so that runs of one process do not overlap.
pub struct Pusher {
    pub config: PushConfig,
    http: reqwest::Client,
    owner: String,
    running: Mutex<()>,
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub delivered: usize,
    pub failed: usize,
}

impl Pusher {
    pub fn new(config: PushConfig) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("charter/", env!("CARGO_PKG_VERSION")));
        if config.refuse_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Pusher {
            http: builder.build()?,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            running: Mutex::new(()),
            config,
        })
    }

    /// Waits for a run in progress to finish (shutdown).
    pub async fn wait_idle(&self) {
        let _guard = self.running.lock().await;
    }
}

/// Claims and processes every due instance, a batch at a time. Returns at
/// once when another run of this process is in progress.
pub async fn run_once(state: &AppState) -> anyhow::Result<RunStats> {
    let pusher = state.pusher.clone();
    let Ok(_guard) = pusher.running.try_lock() else {
        return Ok(RunStats::default());
    };
    let mut stats = RunStats::default();
    let permits = Arc::new(Semaphore::new(pusher.config.concurrency.max(1)));
    loop {
        let t = now();
        let lease_until = t + pusher.config.lease.as_secs() as i64;
        let jobs = state
            .store
            .claim_pushes(&pusher.owner, t, lease_until, pusher.config.batch)
            .await?;
        if jobs.is_empty() {
            break;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for job in jobs {
            let (state, permits) = (state.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                process(&state, job).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(true) => stats.delivered += 1,
                Ok(false) => stats.failed += 1,
                Err(e) => {
                    tracing::error!(error = %e, "push task panicked");
                    stats.failed += 1;
                }
            }
        }
    }
    if stats != RunStats::default() {
        tracing::info!(
            delivered = stats.delivered,
            failed = stats.failed,
            "push run"
        );
    }
    Ok(stats)
}

/// Pushes one instance now, due or not (`POST .../push`). `None` when
/// another run holds it or its license cannot be pushed.
pub async fn push_now(state: &AppState, lid: &str, id: &str) -> anyhow::Result<Option<bool>> {
    let t = now();
    let lease_until = t + state.pusher.config.lease.as_secs() as i64;
    match state
        .store
        .claim_push(lid, id, &state.pusher.owner, t, lease_until)
        .await?
    {
        Some(job) => Ok(Some(process(state, job).await)),
        None => Ok(None),
    }
}

/// Delivers one claimed instance's token (or removal) and records the
/// outcome. True when delivered.
async fn process(state: &AppState, job: PushJob) -> bool {
    let mut i = job.instance;
    let dialect = i.dialect.as_str();
    let t = now();
    // Read once: the delivery needs the terms, a failure the warning window.
    let license = state.store.get_license(&i.lid).await;
    let outcome = match &license {
        Ok(l) => deliver_job(state, &mut i, l.as_ref(), job.credentials.as_deref(), t).await,
        Err(e) => Err(e.to_string()),
    };
    let delivered = outcome.is_ok();
    state
        .metrics
        .pushes
        .get_or_create(&crate::metrics::PushLabels {
            dialect: dialect.into(),
            outcome: if delivered { "delivered" } else { "failed" }.into(),
        })
        .inc();
    if let Err(e) = outcome {
        i.push_attempts += 1;
        i.push_last_error = Some(e.clone());
        i.push_next_at = Some(t + backoff(&state.pusher.config, i.push_attempts));
        let warn_days = match &license {
            Ok(Some(l)) => l.terms.tok_exp_warn_days,
            _ => 0,
        };
        // At risk: the token the instance holds expires within the warning window.
        i.push_at_risk = i
            .token_expires_at
            .is_none_or(|exp| t >= exp - warn_days * DAY);
        if i.push_at_risk {
            tracing::warn!(lid = %i.lid, instance = %i.url, attempts = i.push_attempts, error = %e,
                "pushes are failing and the instance's token expires soon");
        } else {
            tracing::info!(lid = %i.lid, instance = %i.url, attempts = i.push_attempts, error = %e, "push failed; will retry");
        }
    }
    match state.store.finish_push(&i, &state.pusher.owner).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(instance = %i.url, "push lease lost before the outcome was recorded")
        }
        Err(e) => tracing::warn!(instance = %i.url, error = %e, "cannot record the push outcome"),
    }
    delivered
}

/// The delivery itself; on success `i` holds the new push state.
async fn deliver_job(
    state: &AppState,
    i: &mut Instance,
    license: Option<&License>,
    sealed: Option<&str>,
    t: i64,
) -> Result<(), String> {
    let credentials = match sealed {
        None => None,
        Some(s) => {
            let sealer = state
                .sealer
                .as_ref()
                .ok_or("no credentials.key to decrypt the credentials")?;
            Some(sealer.open(s).map_err(|e| e.to_string())?)
        }
    };
    if !url_allowed(&i.url, state.pusher.config.refuse_private) {
        return Err("refused: the instance URL is a private or loopback address".into());
    }
    let http = &state.pusher.http;
    if i.removal_pending {
        send_removal(http, i.dialect, &i.url, credentials.as_ref()).await?;
        i.removal_pending = false;
        i.push_next_at = None;
        tracing::info!(lid = %i.lid, instance = %i.url, "revocation delivered");
    } else {
        let license = license.ok_or("license is gone")?;
        check_renewable(license, t).map_err(|e| e.to_string())?;
        // Redeliver a token issued for an earlier attempt, if still good.
        let pending = match &i.push_pending_jti {
            Some(jti) => state
                .store
                .get_token(jti)
                .await
                .map_err(|e| e.to_string())?,
            None => None,
        };
        let (token, iat, exp) = match pending.filter(|p| p.exp > t + 60) {
            Some(p) => (p.token, p.iat, p.exp),
            None => {
                let account = state
                    .store
                    .get_account(&license.account_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("account is gone")?;
                let req = issuance::Request {
                    license,
                    account: &account,
                    instance: i.clone(),
                    bind: false,
                    reason: TokenReason::Push,
                    renewed_from: None,
                    usage: None,
                };
                let event = crate::domain::AuditEvent {
                    id: 0,
                    at: t,
                    actor_kind: crate::domain::ActorKind::System,
                    actor: "push".into(),
                    action: "token.push".into(),
                    target_type: "token".into(),
                    target_id: String::new(),
                    ip: None,
                    detail: Some(json!({"lid": i.lid, "instance": i.url})),
                };
                let (token, claims) = issuance::issue_audited(
                    &*state.store,
                    &state.keys,
                    &state.config.public_url,
                    req,
                    t,
                    Some(event),
                )
                .await
                .map_err(|e| format!("cannot issue: {e:?}"))?;
                state.metrics.token_issued("push");
                i.last_jti = Some(claims.jti.clone());
                i.push_pending_jti = Some(claims.jti);
                (token, claims.iat, claims.exp)
            }
        };
        send_token(http, i.dialect, &i.url, &token, credentials.as_ref()).await?;
        i.push_pending_jti = None;
        i.token_expires_at = Some(exp);
        i.push_next_at = Some(iat + license.terms.update_days * DAY);
        tracing::info!(lid = %i.lid, instance = %i.url, "token pushed");
    }
    i.push_attempts = 0;
    i.push_last_error = None;
    i.push_last_ok_at = Some(t);
    i.push_at_risk = false;
    Ok(())
}

fn authorize(req: reqwest::RequestBuilder, c: Option<&Credentials>) -> reqwest::RequestBuilder {
    match c {
        Some(Credentials::Basic { username, password }) => req.basic_auth(username, Some(password)),
        Some(Credentials::Bearer { token }) => req.bearer_auth(token),
        None => req,
    }
}

async fn send_token(
    http: &reqwest::Client,
    d: Dialect,
    url: &str,
    token: &str,
    c: Option<&Credentials>,
) -> Result<(), String> {
    let req = match d {
        Dialect::Grafana => http
            .post(format!("{url}api/licensing/token"))
            .json(&json!({ "token": token })),
        Dialect::Consul => http
            .put(format!("{url}v1/operator/license"))
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(token.to_string()),
        Dialect::Redis => http
            .put(format!("{url}v1/license"))
            .json(&json!({ "license": token })),
    };
    send(authorize(req, c)).await
}

async fn send_removal(
    http: &reqwest::Client,
    d: Dialect,
    url: &str,
    c: Option<&Credentials>,
) -> Result<(), String> {
    let req = match d {
        Dialect::Grafana => http
            .request(Method::DELETE, format!("{url}api/licensing/token"))
            .json(&json!({ "instance": url })),
        Dialect::Consul => http.delete(format!("{url}v1/operator/license")),
        // Redis Enterprise has no call to remove a license.
        Dialect::Redis => return Ok(()),
    };
    send(authorize(req, c)).await
}

async fn send(req: reqwest::RequestBuilder) -> Result<(), String> {
    let res = req.send().await.map_err(|e| describe(&e))?;
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let body = res.text().await.unwrap_or_default();
    let body: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
    Err(format!("HTTP {}: {body}", status.as_u16()))
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Exponential backoff with ±20% jitter: base, 2·base, 4·base... up to max.
pub fn backoff(c: &PushConfig, attempts: i64) -> i64 {
    let base = c.backoff_base.as_secs_f64().max(1.0);
    let exp = (attempts.clamp(1, 30) - 1) as i32;
    let delay = (base * 2f64.powi(exp)).min(c.backoff_max.as_secs_f64().max(base));
    let mut r = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let jitter = 0.8 + 0.4 * (u32::from_le_bytes(r) as f64 / u32::MAX as f64);
    (delay * jitter).round().max(1.0) as i64
}

/// Whether an address is one a vendor deployment must not call.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// A resolver that drops private addresses, so a name cannot point the
/// pusher inside the vendor's network (checked at connect time, after DNS).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a URL may be pushed to under `refuse_private` (IP literals skip DNS).
pub fn url_allowed(url: &str, refuse_private: bool) -> bool {
    if !refuse_private {
        return true;
    }
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => !is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_private(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => d != "localhost" && !d.ends_with(".localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PushConfig {
        PushConfig {
            interval: Duration::from_secs(5),
            concurrency: 4,
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            refuse_private: true,
            batch: 100,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let c = cfg();
        for (attempt, nominal) in [(1, 10.0), (2, 20.0), (3, 40.0), (10, 3600.0), (50, 3600.0)] {
            for _ in 0..50 {
                let d = backoff(&c, attempt) as f64;
                assert!(
                    d >= nominal * 0.8 - 1.0 && d <= nominal * 1.2 + 1.0,
                    "attempt {attempt}: {d}"
                );
            }
        }
    }

    #[test]
    fn private_addresses_are_refused_when_asked() {
        for url in [
            "http://127.0.0.1:3000/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
        ] {
            assert!(!url_allowed(url, true), "{url}");
            assert!(url_allowed(url, false), "{url}");
        }
        for url in [
            "https://grafana.example.com/",
            "http://8.8.8.8/",
            "http://[2001:4860::8888]/",
        ] {
            assert!(url_allowed(url, true), "{url}");
        }
    }
}
