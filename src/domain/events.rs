//! Events (what happened to licenses, instances and tokens, recorded once
//! in the transaction of the change that caused it) and the webhook
//! endpoints they are delivered to.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::rfc3339;

/// The types of events, as receivers see them in `type`.
pub const EVENT_TYPES: &[&str] = &[
    "license.created",
    "license.updated",
    "license.suspended",
    "license.resumed",
    "license.revoked",
    "license.expiring",
    "license.expired",
    "license.over_limit",
    "license.back_within_limit",
    "instance.bound",
    "instance.unbound",
    "instance.push_at_risk",
    "instance.push_recovered",
    "token.issued",
    "token.renewed",
    "webhook.disabled",
    "webhook.test",
];

/// Recorded only while an enabled endpoint subscribes to it: one per
/// renewal would double what a renewal writes for nobody.
pub const ON_DEMAND: &[&str] = &["token.renewed"];

/// Whether `t` names an event type an endpoint may subscribe to
/// (`webhook.test` is sent only by `POST /api/webhooks/{id}/test`).
pub fn is_subscribable(t: &str) -> bool {
    t != "webhook.test" && EVENT_TYPES.contains(&t)
}

/// An event to record with a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub payload: Value,
}

impl NewEvent {
    pub fn new(kind: &'static str, payload: Value) -> NewEvent {
        debug_assert!(EVENT_TYPES.contains(&kind), "unknown event type {kind}");
        NewEvent { kind, payload }
    }

    /// Whether it is recorded only when an endpoint subscribes.
    pub fn on_demand(&self) -> bool {
        ON_DEMAND.contains(&self.kind)
    }

    /// A fresh message id (`msg_` and a time-ordered UUID), the
    /// `webhook-id` of its deliveries.
    pub fn new_uid() -> String {
        format!("msg_{}", uuid::Uuid::now_v7().simple())
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    /// `msg_...`: the `webhook-id` of every delivery of this event.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl Event {
    /// The body of a delivery, as the Standard Webhooks specification
    /// shapes it: `type`, `timestamp` and `data`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "type": self.kind,
            "timestamp": rfc3339::format(self.at),
            "data": self.payload,
        })
        .to_string()
    }
}

/// A webhook endpoint. Its secret is never part of it once created.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Webhook {
    /// `wh_...`.
    pub id: String,
    pub url: String,
    pub description: String,
    /// The event types it receives.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why the issuer disabled it (repeated failures, or the endpoint
    /// answered 410 Gone); `null` when enabled or disabled by a person.
    pub disabled_reason: Option<String>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// Bumped by every change; the ETag of its GET.
    pub version: i64,
}

/// A webhook with its sealed secrets, for delivery.
#[derive(Debug, Clone)]
pub struct WebhookSecrets {
    pub secret: String,
    /// The secret before the last rotation, still signing until `until`.
    pub previous: Option<(String, i64)>,
}

/// State of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retries exhausted, or the endpoint refused it for good.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt, if the endpoint answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<i64>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A delivery leased for an attempt: the event, where it goes, and the
/// endpoint's sealed secrets.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub id: i64,
    pub attempts: i64,
    pub created_at: i64,
    pub webhook_id: String,
    pub url: String,
    pub secrets: WebhookSecrets,
    pub event: Event,
}

/// What an attempt writes: only the delivery's columns, and only while the
/// lease holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub at: i64,
    /// Disable the endpoint (with this reason) when it has not delivered
    /// anything since `since` (the failed delivery's creation): retries
    /// exhausted, or 410 Gone.
    pub disable: Option<Disable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disable {
    pub reason: String,
    /// Unless a delivery succeeded at or after this time.
    pub unless_delivered_since: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_standard_webhooks_shape() {
        let e = Event {
            id: "msg_1".into(),
            kind: "license.revoked".into(),
            at: 1_700_000_000,
            payload: serde_json::json!({ "lid": "L" }),
        };
        let v: Value = serde_json::from_str(&e.body()).expect("JSON body");
        assert_eq!(v["type"], "license.revoked");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["data"]["lid"], "L");
    }

    #[test]
    fn test_events_cannot_be_subscribed_to() {
        assert!(is_subscribable("license.expiring"));
        assert!(!is_subscribable("webhook.test"));
        assert!(!is_subscribable("license.exploded"));
    }
}
