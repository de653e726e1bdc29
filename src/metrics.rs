//! Prometheus metrics, served at `GET /metrics`: requests by route and status,
//! tokens issued by reason, renewals refused by reason, pushes, licenses by
//! state and by expiry window (what operators alert on) and the database
//! pool.
//!
//! Every label takes a bounded set of values: the scrape's size does not
//! grow with the number of licenses. (A series per license,
//! `charter_license_expiry_seconds{lid}`, made 871 KB and 12-15 ms per
//! scrape at 10k licenses and 8 MB at 100k; issue 17.) Which licenses are
//! in a window is a question for the API: `GET /api/licenses?state=active
//! &expires_before=...`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/api/licenses/{lid}`), never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub dialect: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabels {
    pub what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabels {
    pub window: String,
}

/// The values of `charter_licenses{state}`, each always present.
const STATES: [&str; 5] = ["active", "expired", "not_started", "suspended", "revoked"];
/// The values of `charter_licenses_expiring{window}`, each always present.
const WINDOWS: [&str; 5] = ["expired", "7d", "30d", "90d", "later"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    /// Tokens issued, by reason: `issue`, `renew`, `push`.
    pub tokens: Family<ReasonLabels, Counter>,
    /// Renewals refused, by reason.
    pub renewals_refused: Family<ReasonLabels, Counter>,
    /// Push deliveries, by dialect and outcome.
    pub pushes: Family<PushLabels, Counter>,
    /// Rows pruned by retention, by what (`tokens`, `audit`, `usage`: usage
    /// reports rolled up into daily ones).
    pub pruned: Family<WhatLabels, Counter>,
    licenses: Family<StateLabels, Gauge>,
    licenses_expiring: Family<WindowLabels, Gauge>,
    db_pool: Family<PoolLabels, Gauge>,
    push_backoff: Gauge,
    push_at_risk: Gauge,
    signing_keys: Family<StateLabels, Gauge>,
    signing_key_age: Gauge,
    /// Webhook delivery attempts, by outcome: `delivered`, `retry`, `failed`.
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    licenses_over_limit: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("charter");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
            }) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_seconds.clone(),
        );
        let tokens = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tokens_issued",
            "License tokens issued, by reason (issue, renew, push)",
            tokens.clone(),
        );
        let renewals_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "renewals_refused",
            "Renewals refused, by reason",
            renewals_refused.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "Token deliveries to instances, by dialect and outcome",
            pushes.clone(),
        );
        let pruned = Family::<WhatLabels, Counter>::default();
        registry.register(
            "pruned",
            "Rows deleted by retention (--token-history-days, --audit-retention-days; usage: reports rolled up after --usage-retention-days), by what",
            pruned.clone(),
        );
        let licenses = Family::<StateLabels, Gauge>::default();
        registry.register(
            "licenses",
            "Licenses by state (active, expired, not_started, suspended, revoked)",
            licenses.clone(),
        );
        let licenses_expiring = Family::<WindowLabels, Gauge>::default();
        registry.register(
            "licenses_expiring",
            "Licenses not suspended or revoked, by when they expire: expired, within 7d, 30d, 90d, or later",
            licenses_expiring.clone(),
        );
        let db_pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            db_pool.clone(),
        );
        let push_backoff = Gauge::default();
        registry.register(
            "push_instances_in_backoff",
            "Instances whose last pushes failed and wait to retry",
            push_backoff.clone(),
        );
        let push_at_risk = Gauge::default();
        registry.register(
            "push_instances_at_risk",
            "Instances whose pushes fail while their token expires within tok_exp_warn_days",
            push_at_risk.clone(),
        );
        let signing_keys = Family::<StateLabels, Gauge>::default();
        registry.register(
            "signing_keys",
            "Signing keys by state (next, current, previous, retired)",
            signing_keys.clone(),
        );
        let signing_key_age = Gauge::default();
        registry.register(
            "signing_key_age_seconds",
            "How long the current signing key has signed (alert when rotation is overdue)",
            signing_key_age.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            webhook_deliveries.clone(),
        );
        let licenses_over_limit = Gauge::default();
        registry.register(
            "licenses_over_limit",
            "Licenses whose instances reported more than they include, in the latest complete day",
            licenses_over_limit.clone(),
        );
        Metrics {
            webhook_deliveries,
            licenses_over_limit,
            signing_keys,
            signing_key_age,
            push_at_risk,
            push_backoff,
            registry,
            requests,
            request_seconds,
            tokens,
            renewals_refused,
            pushes,
            pruned,
            licenses,
            licenses_expiring,
            db_pool,
        }
    }

    pub fn token_issued(&self, reason: &str) {
        self.tokens
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn pruned(&self, what: &str, n: u64) {
        self.pruned
            .get_or_create(&WhatLabels { what: what.into() })
            .inc_by(n);
    }

    pub fn renewal_refused(&self, reason: &str) {
        self.renewals_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// The text exposition, with the gauges read from the store now.
    pub async fn render(&self, store: &dyn Store) -> Result<String, std::fmt::Error> {
        if let Ok(counts) = store.license_counts(charter_token::now()).await {
            for state in STATES {
                let n = counts
                    .by_state
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                self.licenses
                    .get_or_create(&StateLabels {
                        state: state.into(),
                    })
                    .set(n);
            }
            for window in WINDOWS {
                let n = counts
                    .by_expiry
                    .iter()
                    .find(|(w, _)| w == window)
                    .map_or(0, |(_, n)| *n);
                self.licenses_expiring
                    .get_or_create(&WindowLabels {
                        window: window.into(),
                    })
                    .set(n);
            }
        }
        if let Ok(over) = store.count_over_limit().await {
            self.licenses_over_limit.set(over);
        }
        if let Ok((backoff, at_risk)) = store.count_push_backoff().await {
            self.push_backoff.set(backoff);
            self.push_at_risk.set(at_risk);
        }
        if let Ok(keys) = store.list_signing_keys().await {
            use crate::domain::KeyState;
            for state in [
                KeyState::Next,
                KeyState::Current,
                KeyState::Previous,
                KeyState::Retired,
            ] {
                let n = keys.iter().filter(|k| k.state == state).count();
                self.signing_keys
                    .get_or_create(&StateLabels {
                        state: state.as_str().into(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            if let Some(current) = keys.iter().find(|k| k.state == KeyState::Current) {
                let since = current.activated_at.unwrap_or(current.created_at);
                self.signing_key_age
                    .set(charter_token::now().saturating_sub(since).max(0));
            }
        }
        let pool = store.pool_status();
        for (name, value) in [
            ("size", pool.size),
            ("available", pool.available),
            ("waiting", pool.waiting),
        ] {
            self.db_pool
                .get_or_create(&PoolLabels { state: name.into() })
                .set(value);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Counts every request by its route template and status.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: res.status().as_u16(),
        })
        .inc();
    res
}
