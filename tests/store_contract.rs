//! The store contract: the storage trait (`charter::db::Store`, with
//! `PushStore` and `AccessStore`) called directly, with the same assertions
//! on SQLite and on PostgreSQL. Each test checks what a user of the issuer
//! would notice: conflicts and their messages, updates conditional on the
//! version read, a revocation that is final, tokens recorded with the
//! instance columns they own and retries that get the first token, push
//! leases only their owner may finish, and exactly one audit event for
//! every change that happened and none for one that did not.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use charter::db::{
    Issuance, NewSaToken, NewServiceAccount, PushOutcome, PushSettings, Recipient, Recorded, Store,
    StoreError, Transition,
};
use charter::domain::{
    Account, ActorKind, AuditEvent, AuditFilter, Dialect, Instance, License, LicenseFilter,
    LicenseState, LicenseStatus, LicenseTerms, Page, Product, Role, ServiceAccount, TokenReason,
    TokenRecord,
};
use charter_token::{DAY, now};
use common::{Backend, Data};
use serde_json::json;

both_stores!(
    products_and_accounts_conflict_update_by_version_and_audit_each_change,
    license_terms_are_versioned_and_a_revocation_is_final,
    license_state_filters_find_each_state,
    instances_bind_with_credentials_within_the_limit,
    renewals_record_usage_and_a_retry_gets_the_first_token,
    issuance_is_refused_for_inactive_licenses_and_unbound_instances,
    push_settings_are_versioned_and_a_renewal_keeps_them,
    push_leases_are_exclusive_and_only_their_owner_finishes,
    terms_updates_racing_a_revocation_each_leave_one_event,
    access_changes_audit_the_rows_they_create,
);

/// Every row of a listing in these tests.
const ALL: &Page = &Page {
    page: 1,
    per_page: 1000,
    after: None,
};

/// The items and the count of a listing.
fn parts<T>(l: charter::domain::Listing<T>) -> (Vec<T>, i64) {
    (l.items, l.counted)
}

// Opening a store.

/// A fresh, migrated database on `backend` and its store. The database is
/// dropped with the `Data`: keep it for as long as the store is used.
async fn open(backend: Backend) -> (Data, Arc<dyn Store>) {
    let data = Data::new(backend).await;
    let store = charter::db::open(&data.database_url, true)
        .await
        .expect("open the store with migrations");
    (data, store)
}

// Records, built with everything a real caller fills in.

/// The audit event a change passes with it (the store assigns the id).
fn event(action: &str, target_type: &str, target_id: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: now(),
        actor_kind: ActorKind::Admin,
        actor: "admin".into(),
        action: action.into(),
        target_type: target_type.into(),
        target_id: target_id.into(),
        ip: Some("192.0.2.1".into()),
        detail: None,
        events: Vec::new(),
    }
}

fn product(slug: &str, now: i64) -> Product {
    Product {
        slug: slug.into(),
        name: "Grafana".into(),
        features: vec!["reporting".into()],
        created_at: now,
        updated_at: now,
        version: 0,
    }
}

fn account(id: &str, slug: &str, now: i64) -> Account {
    Account {
        id: id.into(),
        company: "Acme Corp".into(),
        account: "acme".into(),
        slug: slug.into(),
        created_at: now,
        updated_at: now,
        version: 0,
    }
}

fn terms(product: &str) -> LicenseTerms {
    LicenseTerms {
        products: vec![product.into()],
        limit_by: "users".into(),
        included_users: 10,
        included_admins: 2,
        included_viewers: 0,
        max_concurrent_user_sessions: 0,
        anonymous_ratio: 0,
        limits: BTreeMap::new(),
        features: vec!["reporting".into()],
        flags: BTreeMap::new(),
        trial: false,
        usage_billing: false,
        details_url: String::new(),
        lic_exp_warn_days: 30,
        tok_exp_warn_days: 7,
        update_days: 7,
        token_ttl_days: 30,
    }
}

/// An active license for `grafana` that started a day ago and runs for a
/// year, with room for ten instances.
fn license(lid: &str, account_id: &str, now: i64) -> License {
    License {
        lid: lid.into(),
        account_id: account_id.into(),
        status: LicenseStatus::Active,
        state: LicenseState::Active,
        starts_at: now - DAY,
        expires_at: now + 365 * DAY,
        max_instances: 10,
        terms: terms("grafana"),
        created_at: now,
        updated_at: now,
        over_limit: None,
        version: 0,
    }
}

/// A new instance as the issuer binds it: with push on, due for a push now.
fn instance(lid: &str, id: &str, url: &str, push_enabled: bool, now: i64) -> Instance {
    Instance {
        id: id.into(),
        lid: lid.into(),
        url: url.into(),
        dialect: Dialect::Grafana,
        push_enabled,
        last_jti: None,
        last_issued_at: None,
        next_renewal_at: None,
        usage: None,
        usage_reported_at: None,
        token_expires_at: None,
        has_credentials: false,
        push_next_at: push_enabled.then_some(now),
        push_attempts: 0,
        push_last_error: None,
        push_last_ok_at: None,
        push_at_risk: false,
        removal_pending: false,
        push_pending_jti: None,
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// A token of instance `instance_id`, issued at `iat` for 30 days.
fn token(lid: &str, instance_id: &str, jti: &str, reason: TokenReason, iat: i64) -> TokenRecord {
    TokenRecord {
        jti: jti.into(),
        lid: lid.into(),
        instance_id: instance_id.into(),
        kid: "key-1".into(),
        iat,
        nbf: iat,
        exp: iat + 30 * DAY,
        reason,
        renewed_from: None,
        token: format!("signed-{jti}"),
    }
}

/// The first token of a new instance, which binds it (as the issuer does:
/// the instance starts with that token).
fn first_token(i: &Instance, jti: &str, iat: i64) -> Issuance {
    let token = token(&i.lid, &i.id, jti, TokenReason::Issue, iat);
    let next_renewal_at = iat + 7 * DAY;
    let bound = Instance {
        last_jti: Some(jti.into()),
        last_issued_at: Some(iat),
        next_renewal_at: Some(next_renewal_at),
        token_expires_at: Some(token.exp),
        ..i.clone()
    };
    Issuance {
        token,
        to: Recipient::Bind(Box::new(bound)),
        next_renewal_at,
        usage: None,
        idempotent_since: None,
    }
}

/// A token issued through the portal to bound instance `id`.
fn reissue(lid: &str, id: &str, jti: &str, iat: i64) -> Issuance {
    Issuance {
        token: token(lid, id, jti, TokenReason::Issue, iat),
        to: Recipient::Bound { id: id.into() },
        next_renewal_at: iat + 7 * DAY,
        usage: None,
        idempotent_since: None,
    }
}

/// Bound instance `id` renewing token `old` at `iat`; a retry within ten
/// minutes gets the token already issued.
fn renewal(lid: &str, id: &str, old: &str, jti: &str, iat: i64) -> Issuance {
    Issuance {
        token: TokenRecord {
            renewed_from: Some(old.into()),
            ..token(lid, id, jti, TokenReason::Renew, iat)
        },
        to: Recipient::Bound { id: id.into() },
        next_renewal_at: iat + 7 * DAY,
        usage: None,
        idempotent_since: Some(iat - 600),
    }
}

// Seeding.

async fn add_account(store: &Arc<dyn Store>, id: &str, now: i64) {
    store
        .create_account(
            &account(id, &format!("slug-{id}"), now),
            &event("account.create", "account", id),
        )
        .await
        .expect("create the account");
}

/// Creates `l`; returns it as stored.
async fn add_license(store: &Arc<dyn Store>, l: &License) -> License {
    store
        .create_license(l, &event("license.create", "license", &l.lid))
        .await
        .expect("create the license");
    get_license(store, &l.lid).await
}

/// Binds `i` through the bind operation (not an issuance).
async fn bind(store: &Arc<dyn Store>, i: &Instance, credentials: Option<&str>) -> Instance {
    store
        .bind_instance(i, credentials, &event("instance.bind", "instance", &i.id))
        .await
        .expect("bind the instance")
}

/// Records `is` and expects a new token.
async fn record(store: &Arc<dyn Store>, is: &Issuance) {
    let action = match is.token.reason {
        TokenReason::Issue => "token.issue",
        TokenReason::Renew => "token.renew",
        TokenReason::Push => "token.push",
    };
    let recorded = store
        .record_issuance(is, &event(action, "token", &is.token.jti))
        .await
        .unwrap_or_else(|e| panic!("record token {}: {e}", is.token.jti));
    assert!(
        matches!(recorded, Recorded::New),
        "token {} is new, not a retry: {recorded:?}",
        is.token.jti
    );
}

async fn get_license(store: &Arc<dyn Store>, lid: &str) -> License {
    store
        .get_license(lid)
        .await
        .expect("get the license")
        .unwrap_or_else(|| panic!("license {lid} exists"))
}

async fn get_instance(store: &Arc<dyn Store>, lid: &str, id: &str) -> Instance {
    store
        .get_instance(lid, id)
        .await
        .expect("get the instance")
        .unwrap_or_else(|| panic!("instance {id} of {lid} exists"))
}

// Reading the audit trail.

/// The events `f` selects, newest first.
async fn audit(store: &Arc<dyn Store>, f: AuditFilter) -> Vec<AuditEvent> {
    let (events, total) = parts(store.list_audit(&f, ALL).await.expect("list the audit"));
    assert_eq!(
        usize::try_from(total).ok(),
        Some(events.len()),
        "the audit total counts the events listed"
    );
    events
}

/// Every event written so far.
async fn all_events(store: &Arc<dyn Store>) -> Vec<AuditEvent> {
    audit(store, AuditFilter::default()).await
}

/// The actions recorded against one target, newest first.
async fn actions(store: &Arc<dyn Store>, target_type: &str, target_id: &str) -> Vec<String> {
    let f = AuditFilter {
        target_type: Some(target_type.into()),
        target_id: Some(target_id.into()),
        ..AuditFilter::default()
    };
    audit(store, f)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// The events of `action` against `target_id`, newest first.
async fn events_of(store: &Arc<dyn Store>, action: &str, target_id: &str) -> Vec<AuditEvent> {
    let f = AuditFilter {
        action: Some(action.into()),
        target_id: Some(target_id.into()),
        ..AuditFilter::default()
    };
    audit(store, f).await
}

// Checking errors.

fn assert_conflict(err: &StoreError, message: &str) {
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "expected a conflict ({message}), got {err:?}"
    );
    assert_eq!(err.to_string(), message);
}

fn assert_not_found(err: &StoreError, message: &str) {
    assert!(
        matches!(err, StoreError::NotFound(_)),
        "expected not found ({message}), got {err:?}"
    );
    assert_eq!(err.to_string(), message);
}

fn assert_not_active(err: &StoreError, lid: &str, status: LicenseStatus) {
    assert!(
        matches!(err, StoreError::NotActive { lid: l, status: s } if l == lid && *s == status),
        "expected license {lid} to be refused as {status}, got {err:?}"
    );
    assert_eq!(err.to_string(), format!("license {lid} is {status}"));
}

/// What a transition that changed the status returns.
fn changed(t: Transition) -> (License, u64) {
    match t {
        Transition::Changed { license, removals } => (license, removals),
        Transition::Unchanged(l) => panic!("expected a change, the license stayed {}", l.status),
    }
}

// 1. Catalog.

async fn products_and_accounts_conflict_update_by_version_and_audit_each_change(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();

    // Products: the slug is unique.
    let grafana = product("grafana", now);
    store
        .create_product(&grafana, &event("product.create", "product", "grafana"))
        .await
        .expect("create a product");
    let err = store
        .create_product(&grafana, &event("product.create", "product", "grafana"))
        .await
        .expect_err("a second product with the same slug");
    assert_conflict(&err, "product grafana already exists");
    let stored = store
        .get_product("grafana")
        .await
        .expect("get the product")
        .expect("the product is stored");
    assert_eq!(stored.version, 1, "a new product is at version 1");

    // An update applies at the version it was computed from, and bumps it.
    let renamed = Product {
        name: "Grafana Enterprise".into(),
        features: vec!["reporting".into(), "saml".into()],
        updated_at: now + 1,
        ..stored.clone()
    };
    let updated = store
        .update_product(&renamed, 1, &event("product.update", "product", "grafana"))
        .await
        .expect("update the product at its version");
    assert_eq!(updated.version, 2, "an update bumps the version");
    assert_eq!(updated.name, "Grafana Enterprise");
    assert_eq!(updated.features, ["reporting", "saml"]);
    assert_eq!(
        (updated.created_at, updated.updated_at),
        (now, now + 1),
        "an update keeps created_at and writes updated_at"
    );
    assert_eq!(
        store.list_products().await.expect("list products"),
        std::slice::from_ref(&updated),
        "the list shows the product as updated"
    );

    // From the old version it is stale and writes nothing.
    let lost = Product {
        name: "Lost update".into(),
        ..renamed.clone()
    };
    let err = store
        .update_product(&lost, 1, &event("product.update", "product", "grafana"))
        .await
        .expect_err("an update from version 1 after version 2");
    assert!(
        matches!(err, StoreError::Stale("product")),
        "a stale product update is refused as stale: {err:?}"
    );
    assert_eq!(err.to_string(), "the product changed since it was read");
    let after = store
        .get_product("grafana")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(after, updated, "a stale update writes nothing");

    let err = store
        .update_product(
            &product("nope", now),
            1,
            &event("product.update", "product", "nope"),
        )
        .await
        .expect_err("updating a product that does not exist");
    assert_not_found(&err, "product nope not found");

    // Accounts: the slug is unique, on create and on update.
    store
        .create_account(
            &account("A1", "acme", now),
            &event("account.create", "account", "A1"),
        )
        .await
        .expect("create an account");
    let err = store
        .create_account(
            &account("A2", "acme", now),
            &event("account.create", "account", "A2"),
        )
        .await
        .expect_err("a second account with the same slug");
    assert_conflict(&err, "an account with slug acme already exists");
    assert!(
        store
            .get_account("A2")
            .await
            .expect("get account")
            .is_none(),
        "the refused account is not stored"
    );
    store
        .create_account(
            &account("A2", "globex", now),
            &event("account.create", "account", "A2"),
        )
        .await
        .expect("create another account with its own slug");

    let a1 = store.get_account("A1").await.expect("get").expect("stored");
    assert_eq!(a1.version, 1, "a new account is at version 1");
    let taken = Account {
        slug: "globex".into(),
        ..a1.clone()
    };
    let err = store
        .update_account(&taken, 1, &event("account.update", "account", "A1"))
        .await
        .expect_err("taking another account's slug");
    assert_conflict(&err, "an account with slug globex already exists");

    let renamed = Account {
        company: "Acme Inc".into(),
        slug: "acme-inc".into(),
        updated_at: now + 1,
        ..a1.clone()
    };
    let updated = store
        .update_account(&renamed, 1, &event("account.update", "account", "A1"))
        .await
        .expect("update the account at its version");
    assert_eq!(
        (
            updated.version,
            updated.company.as_str(),
            updated.slug.as_str()
        ),
        (2, "Acme Inc", "acme-inc")
    );
    let err = store
        .update_account(&renamed, 1, &event("account.update", "account", "A1"))
        .await
        .expect_err("an account update from version 1 after version 2");
    assert!(
        matches!(err, StoreError::Stale("account")),
        "a stale account update is refused as stale: {err:?}"
    );
    let err = store
        .update_account(
            &account("A9", "nobody", now),
            1,
            &event("account.update", "account", "A9"),
        )
        .await
        .expect_err("updating an account that does not exist");
    assert_not_found(&err, "account A9 not found");
    let (accounts, total) = parts(store.list_accounts(ALL).await.expect("list accounts"));
    assert_eq!(total, 2);
    assert_eq!(
        accounts[0], updated,
        "the list shows the account as updated"
    );

    // One event per change that happened; none for those refused.
    assert_eq!(
        actions(&store, "product", "grafana").await,
        ["product.update", "product.create"]
    );
    assert!(actions(&store, "product", "nope").await.is_empty());
    assert_eq!(
        actions(&store, "account", "A1").await,
        ["account.update", "account.create"]
    );
    assert_eq!(actions(&store, "account", "A2").await, ["account.create"]);
    assert!(actions(&store, "account", "A9").await.is_empty());
}

// 2. Licenses.

async fn license_terms_are_versioned_and_a_revocation_is_final(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    let l = add_license(&store, &license("L1", "A1", now)).await;
    assert_eq!(
        (l.version, l.status, l.state),
        (1, LicenseStatus::Active, LicenseState::Active)
    );

    // Terms: at the version read; never the status.
    let edit = License {
        max_instances: 3,
        terms: LicenseTerms {
            included_users: 50,
            ..l.terms.clone()
        },
        status: LicenseStatus::Suspended,
        updated_at: now + 1,
        ..l.clone()
    };
    let updated = store
        .update_license_terms(
            &edit,
            &l,
            Some(1),
            &event("license.update", "license", "L1"),
        )
        .await
        .expect("update the terms at their version");
    assert_eq!(
        (
            updated.version,
            updated.max_instances,
            updated.terms.included_users
        ),
        (2, 3, 50)
    );
    assert_eq!(
        updated.status,
        LicenseStatus::Active,
        "a terms update never writes the status"
    );
    let stale = License {
        max_instances: 1,
        ..edit.clone()
    };
    let err = store
        .update_license_terms(
            &stale,
            &l,
            Some(1),
            &event("license.update", "license", "L1"),
        )
        .await
        .expect_err("a terms update from version 1 after version 2");
    assert!(
        matches!(err, StoreError::Stale("license")),
        "a stale terms update is refused as stale: {err:?}"
    );
    assert_eq!(
        get_license(&store, "L1").await,
        updated,
        "a stale terms update writes nothing"
    );
    let err = store
        .update_license_terms(
            &license("LX", "A1", now),
            &license("LX", "A1", now),
            None,
            &event("license.update", "license", "LX"),
        )
        .await
        .expect_err("updating a license that does not exist");
    assert_not_found(&err, "license LX not found");

    // One instance pushed to, one not: a revocation has one removal to deliver.
    bind(
        &store,
        &instance("L1", "I-push", "https://push.example/", true, now),
        None,
    )
    .await;
    bind(
        &store,
        &instance("L1", "I-quiet", "https://quiet.example/", false, now),
        None,
    )
    .await;

    // Suspend: the event keeps the caller's detail and adds the statuses.
    let mut suspend = event("license.suspend", "license", "L1");
    suspend.detail = Some(json!({"reason": "unpaid invoice"}));
    let (suspended, removals) = changed(
        store
            .transition_license("L1", LicenseStatus::Suspended, now, &suspend)
            .await
            .expect("suspend"),
    );
    assert_eq!(
        (
            suspended.status,
            suspended.state,
            suspended.version,
            removals
        ),
        (LicenseStatus::Suspended, LicenseState::Suspended, 3, 0)
    );
    let events = events_of(&store, "license.suspend", "L1").await;
    assert_eq!(events.len(), 1, "one event for the suspension");
    assert_eq!(
        events[0].detail,
        Some(json!({"reason": "unpaid invoice", "status": {"old": "active", "new": "suspended"}}))
    );

    // Suspending again changes nothing and writes no event.
    match store
        .transition_license("L1", LicenseStatus::Suspended, now, &suspend)
        .await
        .expect("suspend again")
    {
        Transition::Unchanged(l) => assert_eq!(
            (l.status, l.version),
            (LicenseStatus::Suspended, 3),
            "an unchanged license is returned as it is"
        ),
        Transition::Changed { .. } => panic!("suspending a suspended license changed it"),
    }
    assert_eq!(events_of(&store, "license.suspend", "L1").await.len(), 1);

    // Revoke: the push-enabled instance gets its removal queued.
    let (revoked, removals) = changed(
        store
            .transition_license(
                "L1",
                LicenseStatus::Revoked,
                now + 5,
                &event("license.revoke", "license", "L1"),
            )
            .await
            .expect("revoke"),
    );
    assert_eq!(
        (revoked.status, revoked.version),
        (LicenseStatus::Revoked, 4)
    );
    assert_eq!(removals, 1, "one removal, for the push-enabled instance");
    let pushed = get_instance(&store, "L1", "I-push").await;
    assert!(
        pushed.removal_pending,
        "the push-enabled instance has a removal pending"
    );
    assert_eq!(
        pushed.push_next_at,
        Some(now + 5),
        "the removal is due at once"
    );
    let quiet = get_instance(&store, "L1", "I-quiet").await;
    assert!(
        !quiet.removal_pending,
        "an instance without push gets no removal"
    );
    assert_eq!(quiet.push_next_at, None);
    let events = events_of(&store, "license.revoke", "L1").await;
    assert_eq!(events.len(), 1, "one event for the revocation");
    assert_eq!(
        events[0].detail,
        Some(json!({"status": {"old": "suspended", "new": "revoked"}, "removals": 1}))
    );

    // Revoked is terminal.
    for to in [LicenseStatus::Active, LicenseStatus::Suspended] {
        let err = store
            .transition_license("L1", to, now, &event("license.resume", "license", "L1"))
            .await
            .expect_err("a revoked license changing status");
        assert_not_active(&err, "L1", LicenseStatus::Revoked);
    }
    assert!(
        matches!(
            store
                .transition_license(
                    "L1",
                    LicenseStatus::Revoked,
                    now,
                    &event("license.revoke", "license", "L1")
                )
                .await
                .expect("revoke again"),
            Transition::Unchanged(_)
        ),
        "revoking a revoked license changes nothing"
    );
    let current = get_license(&store, "L1").await;
    assert_eq!(
        current.status,
        LicenseStatus::Revoked,
        "the license stays revoked"
    );
    let err = store
        .update_license_terms(
            &current,
            &current,
            None,
            &event("license.update", "license", "L1"),
        )
        .await
        .expect_err("editing a revoked license's terms");
    assert_not_active(&err, "L1", LicenseStatus::Revoked);
    let err = store
        .bind_instance(
            &instance("L1", "I-late", "https://late.example/", false, now),
            None,
            &event("instance.bind", "instance", "I-late"),
        )
        .await
        .expect_err("binding to a revoked license");
    assert_not_active(&err, "L1", LicenseStatus::Revoked);
    assert_eq!(
        get_license(&store, "L1").await,
        current,
        "nothing changed the revoked license"
    );
    assert_eq!(
        store.revoked_licenses().await.expect("revoked licenses"),
        ["L1"]
    );
    let err = store
        .transition_license("LX", LicenseStatus::Suspended, now, &suspend)
        .await
        .expect_err("suspending a license that does not exist");
    assert_not_found(&err, "license LX not found");

    assert_eq!(
        actions(&store, "license", "L1").await,
        [
            "license.revoke",
            "license.suspend",
            "license.update",
            "license.create"
        ],
        "one event per change; none for those refused or that changed nothing"
    );
    assert!(actions(&store, "instance", "I-late").await.is_empty());
}

async fn license_state_filters_find_each_state(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    add_account(&store, "A2", now).await;
    let base = license("L", "A1", now);
    let cases = [
        (
            LicenseState::Active,
            License {
                lid: "L-active".into(),
                ..base.clone()
            },
        ),
        (
            LicenseState::Expired,
            License {
                lid: "L-expired".into(),
                starts_at: now - 60 * DAY,
                expires_at: now - DAY,
                ..base.clone()
            },
        ),
        (
            LicenseState::NotStarted,
            License {
                lid: "L-not-started".into(),
                starts_at: now + DAY,
                expires_at: now + 60 * DAY,
                ..base.clone()
            },
        ),
        (
            LicenseState::Suspended,
            License {
                lid: "L-suspended".into(),
                status: LicenseStatus::Suspended,
                ..base.clone()
            },
        ),
        (
            LicenseState::Revoked,
            License {
                lid: "L-revoked".into(),
                status: LicenseStatus::Revoked,
                ..base.clone()
            },
        ),
    ];
    for (_, l) in &cases {
        add_license(&store, l).await;
    }
    // Active too, but for another product and account.
    add_license(
        &store,
        &License {
            lid: "L-consul".into(),
            account_id: "A2".into(),
            terms: terms("consul"),
            ..base.clone()
        },
    )
    .await;

    let grafana = |state| LicenseFilter {
        account_id: None,
        product: Some("grafana".into()),
        state: Some(state),
        expires_before: None,
        now,
    };
    for (state, l) in &cases {
        let (found, total) = parts(
            store
                .list_licenses(&grafana(*state), ALL)
                .await
                .expect("list licenses"),
        );
        let lids: Vec<&str> = found.iter().map(|l| l.lid.as_str()).collect();
        assert_eq!(
            lids,
            [l.lid.as_str()],
            "the grafana licenses in state {state}"
        );
        assert_eq!(total, 1, "the total of state {state}");
        assert_eq!(found[0].state, *state, "{} reads as {state}", l.lid);
    }

    let active = |f: LicenseFilter| {
        let store = store.clone();
        async move {
            let (found, total) = parts(store.list_licenses(&f, ALL).await.expect("list licenses"));
            assert_eq!(usize::try_from(total).ok(), Some(found.len()));
            found.into_iter().map(|l| l.lid).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        active(LicenseFilter {
            state: Some(LicenseState::Active),
            now,
            ..LicenseFilter::default()
        })
        .await,
        ["L-active", "L-consul"],
        "every active license, of any product"
    );
    assert_eq!(
        active(LicenseFilter {
            account_id: Some("A2".into()),
            now,
            ..LicenseFilter::default()
        })
        .await,
        ["L-consul"],
        "the licenses of one account"
    );
    assert_eq!(
        active(LicenseFilter {
            now,
            ..LicenseFilter::default()
        })
        .await
        .len(),
        6,
        "no filter lists every license"
    );
}

// 3. Instances and issuance.

async fn instances_bind_with_credentials_within_the_limit(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    add_license(
        &store,
        &License {
            max_instances: 2,
            ..license("L1", "A1", now)
        },
    )
    .await;

    // Bound with credentials: it says so, and never shows them.
    let a = instance("L1", "I1", "https://a.example/", true, now);
    let bound = bind(&store, &a, Some("sealed-credentials")).await;
    assert_eq!(
        (bound.version, bound.has_credentials),
        (1, true),
        "a bound instance is at version 1 with its credentials"
    );
    assert_eq!(
        get_instance(&store, "L1", "I1").await,
        bound,
        "what a bind returns is what is stored"
    );
    let found = store
        .find_instance("L1", "https://a.example/")
        .await
        .expect("find by URL")
        .expect("the instance is found by its URL");
    assert_eq!(found.id, "I1");

    // The URL is bound once per license.
    let err = store
        .bind_instance(
            &instance("L1", "I9", "https://a.example/", false, now),
            None,
            &event("instance.bind", "instance", "I9"),
        )
        .await
        .expect_err("binding a URL twice");
    assert_conflict(
        &err,
        "instance https://a.example/ is already bound to license L1",
    );
    assert!(
        store.get_instance("L1", "I9").await.expect("get").is_none(),
        "the refused instance is not stored"
    );

    // An issuance binds the second instance with its first token.
    let b = instance("L1", "I2", "https://b.example/", false, now);
    let first = first_token(&b, "J2", now);
    record(&store, &first).await;
    let i2 = get_instance(&store, "L1", "I2").await;
    assert_eq!(
        (i2.last_jti.as_deref(), i2.version, i2.has_credentials),
        (Some("J2"), 1, false)
    );
    assert_eq!(
        store.get_token("J2").await.expect("get token"),
        Some(first.token.clone()),
        "the token is recorded as issued"
    );

    // A third is refused, by an issuance and by a bind, and leaves nothing.
    let c = instance("L1", "I3", "https://c.example/", false, now);
    let err = store
        .record_issuance(
            &first_token(&c, "J3", now),
            &event("token.issue", "token", "J3"),
        )
        .await
        .expect_err("a third instance on a license for two");
    assert!(
        matches!(&err, StoreError::InstanceLimit { lid, max: 2 } if lid == "L1"),
        "the limit refuses the third: {err:?}"
    );
    assert_eq!(
        err.to_string(),
        "license L1 already has its 2 instance(s) bound"
    );
    let err = store
        .bind_instance(&c, None, &event("instance.bind", "instance", "I3"))
        .await
        .expect_err("binding a third instance on a license for two");
    assert!(
        matches!(err, StoreError::InstanceLimit { max: 2, .. }),
        "the limit refuses the bind: {err:?}"
    );
    assert!(store.get_instance("L1", "I3").await.expect("get").is_none());
    assert!(store.get_token("J3").await.expect("get token").is_none());
    assert_eq!(
        store
            .list_instances("L1", ALL)
            .await
            .expect("list")
            .items
            .len(),
        2,
        "two instances bound"
    );

    // Unbinding makes room; its tokens stay in the history.
    assert!(
        store
            .unbind_instance("L1", "I2", &event("instance.unbind", "instance", "I2"))
            .await
            .expect("unbind"),
        "unbinding a bound instance"
    );
    assert!(
        !store
            .unbind_instance("L1", "I2", &event("instance.unbind", "instance", "I2"))
            .await
            .expect("unbind again"),
        "unbinding it again finds nothing"
    );
    assert!(store.get_token("J2").await.expect("get token").is_some());
    bind(&store, &c, None).await;

    assert_eq!(actions(&store, "instance", "I1").await, ["instance.bind"]);
    assert!(actions(&store, "instance", "I9").await.is_empty());
    assert_eq!(actions(&store, "token", "J2").await, ["token.issue"]);
    assert!(actions(&store, "token", "J3").await.is_empty());
    assert_eq!(
        actions(&store, "instance", "I2").await,
        ["instance.unbind"],
        "one event for the unbind; none for the one that found nothing"
    );
    assert_eq!(actions(&store, "instance", "I3").await, ["instance.bind"]);
}

async fn renewals_record_usage_and_a_retry_gets_the_first_token(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    add_license(&store, &license("L1", "A1", now)).await;
    let pushed = instance("L1", "I-push", "https://push.example/", true, now);
    let quiet = instance("L1", "I-quiet", "https://quiet.example/", false, now);
    record(&store, &first_token(&pushed, "J1", now)).await;
    record(&store, &first_token(&quiet, "Q1", now)).await;

    // A renewal with usage: the instance's token columns, usage and next
    // push (push is on) follow it.
    let before = get_instance(&store, "L1", "I-push").await;
    let usage = BTreeMap::from([("admins".to_string(), 1), ("users".to_string(), 7)]);
    let renew = Issuance {
        usage: Some(usage.clone()),
        ..renewal("L1", "I-push", "J1", "J2", now + 10)
    };
    record(&store, &renew).await;
    let after = get_instance(&store, "L1", "I-push").await;
    assert_eq!(after.last_jti.as_deref(), Some("J2"));
    assert_eq!(after.last_issued_at, Some(now + 10));
    assert_eq!(after.next_renewal_at, Some(renew.next_renewal_at));
    assert_eq!(after.token_expires_at, Some(renew.token.exp));
    assert_eq!(
        after.usage.as_ref(),
        Some(&usage),
        "the usage reported is kept"
    );
    assert_eq!(after.usage_reported_at, Some(now + 10));
    assert_eq!(
        after.push_next_at,
        Some(renew.next_renewal_at),
        "with push on, the next push follows the renewal"
    );
    assert_eq!(
        after.version,
        before.version + 1,
        "a renewal bumps the version"
    );

    // A retry within the window gets the first token and writes nothing.
    let retry = renewal("L1", "I-push", "J1", "J3", now + 20);
    match store
        .record_issuance(&retry, &event("token.renew", "token", "J3"))
        .await
        .expect("retry the renewal")
    {
        Recorded::Existing(t) => assert_eq!(t, renew.token, "the retry gets the first token"),
        Recorded::New => panic!("a retry within the window recorded a second token"),
    }
    assert!(store.get_token("J3").await.expect("get token").is_none());
    assert_eq!(
        get_instance(&store, "L1", "I-push").await,
        after,
        "a retry changes nothing on the instance"
    );
    assert_eq!(
        audit(
            &store,
            AuditFilter {
                action: Some("token.renew".into()),
                ..AuditFilter::default()
            }
        )
        .await
        .len(),
        1,
        "one renewal event, none for the retry"
    );

    // A renewal without usage keeps the last report.
    record(&store, &renewal("L1", "I-push", "J2", "J4", now + 30)).await;
    let later = get_instance(&store, "L1", "I-push").await;
    assert_eq!(later.last_jti.as_deref(), Some("J4"));
    assert_eq!(
        (later.usage.as_ref(), later.usage_reported_at),
        (Some(&usage), Some(now + 10)),
        "a renewal without usage keeps the last report"
    );

    // Without push, the next push stays unset.
    let renew = renewal("L1", "I-quiet", "Q1", "Q2", now + 10);
    record(&store, &renew).await;
    let q = get_instance(&store, "L1", "I-quiet").await;
    assert_eq!(q.next_renewal_at, Some(renew.next_renewal_at));
    assert_eq!(q.push_next_at, None, "with push off, no push is scheduled");

    let (tokens, total) = parts(store.list_tokens("L1", ALL).await.expect("list tokens"));
    assert_eq!(total, 5, "J1, Q1, J2, J4, Q2; not the retry");
    assert_eq!(tokens[0].jti, "J4", "newest first");
}

async fn issuance_is_refused_for_inactive_licenses_and_unbound_instances(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    add_license(&store, &license("L1", "A1", now)).await;
    record(
        &store,
        &first_token(
            &instance("L1", "I1", "https://a.example/", true, now),
            "J1",
            now,
        ),
    )
    .await;
    let events_before = all_events(&store).await.len();

    // Suspended: no renewal, no new instance.
    changed(
        store
            .transition_license(
                "L1",
                LicenseStatus::Suspended,
                now,
                &event("license.suspend", "license", "L1"),
            )
            .await
            .expect("suspend"),
    );
    let err = store
        .record_issuance(
            &renewal("L1", "I1", "J1", "J2", now + 10),
            &event("token.renew", "token", "J2"),
        )
        .await
        .expect_err("renewing under a suspended license");
    assert_not_active(&err, "L1", LicenseStatus::Suspended);
    let err = store
        .record_issuance(
            &first_token(
                &instance("L1", "I2", "https://b.example/", false, now),
                "K1",
                now,
            ),
            &event("token.issue", "token", "K1"),
        )
        .await
        .expect_err("binding by issuance under a suspended license");
    assert_not_active(&err, "L1", LicenseStatus::Suspended);
    assert!(store.get_token("J2").await.expect("get token").is_none());
    assert!(store.get_instance("L1", "I2").await.expect("get").is_none());
    assert_eq!(
        get_instance(&store, "L1", "I1").await.last_jti.as_deref(),
        Some("J1"),
        "the refused renewal left the instance alone"
    );
    assert_eq!(
        all_events(&store).await.len(),
        events_before + 1,
        "only the suspension was audited"
    );

    // Resumed, it renews again.
    changed(
        store
            .transition_license(
                "L1",
                LicenseStatus::Active,
                now,
                &event("license.resume", "license", "L1"),
            )
            .await
            .expect("resume"),
    );
    record(&store, &renewal("L1", "I1", "J1", "J2", now + 10)).await;

    // Unbound: the instance is gone, and so is its renewal.
    assert!(
        store
            .unbind_instance("L1", "I1", &event("instance.unbind", "instance", "I1"))
            .await
            .expect("unbind")
    );
    let err = store
        .record_issuance(
            &renewal("L1", "I1", "J2", "J3", now + 20),
            &event("token.renew", "token", "J3"),
        )
        .await
        .expect_err("renewing an unbound instance");
    assert_not_found(&err, "instance I1 is not bound to license L1");
    let err = store
        .record_issuance(
            &reissue("L1", "I1", "J4", now + 20),
            &event("token.issue", "token", "J4"),
        )
        .await
        .expect_err("issuing to an unbound instance");
    assert_not_found(&err, "instance I1 is not bound to license L1");
    assert!(store.get_token("J3").await.expect("get token").is_none());
    assert!(store.get_token("J4").await.expect("get token").is_none());

    let err = store
        .record_issuance(
            &first_token(
                &instance("LX", "I5", "https://x.example/", false, now),
                "X1",
                now,
            ),
            &event("token.issue", "token", "X1"),
        )
        .await
        .expect_err("issuing under a license that does not exist");
    assert_not_found(&err, "license LX not found");

    for refused in ["J3", "J4", "K1", "X1"] {
        assert!(
            actions(&store, "token", refused).await.is_empty(),
            "no event for refused token {refused}"
        );
    }
    assert_eq!(actions(&store, "token", "J2").await, ["token.renew"]);
}

async fn push_settings_are_versioned_and_a_renewal_keeps_them(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    add_license(&store, &license("L1", "A1", now)).await;
    bind(
        &store,
        &instance("L1", "I1", "https://a.example/", true, now),
        Some("sealed-1"),
    )
    .await;
    record(&store, &reissue("L1", "I1", "J1", now)).await;

    // The renewer reads the instance; then push is turned off.
    let read = get_instance(&store, "L1", "I1").await;
    assert!(read.push_enabled);
    let off = PushSettings {
        dialect: Dialect::Consul,
        push_enabled: false,
        push_next_at: None,
        push_attempts: 0,
        credentials: None,
    };
    let updated = store
        .update_push_settings(
            "L1",
            "I1",
            &off,
            read.version,
            now + 1,
            &event("instance.update", "instance", "I1"),
        )
        .await
        .expect("turn push off at the version read");
    assert_eq!(
        (updated.dialect, updated.push_enabled, updated.push_next_at),
        (Dialect::Consul, false, None)
    );
    assert_eq!(
        updated.version,
        read.version + 1,
        "the update bumps the version"
    );
    assert!(updated.has_credentials, "credentials: None keeps them");

    // The renewal recorded afterwards does not turn push back on.
    let renew = renewal("L1", "I1", "J1", "J2", now + 10);
    record(&store, &renew).await;
    let after = get_instance(&store, "L1", "I1").await;
    assert_eq!(after.last_jti.as_deref(), Some("J2"));
    assert_eq!(after.next_renewal_at, Some(renew.next_renewal_at));
    assert_eq!(
        (after.push_enabled, after.push_next_at, after.dialect),
        (false, None, Dialect::Consul),
        "a renewal never writes the push settings"
    );

    // From the version read before, the change is stale and writes nothing.
    let on = PushSettings {
        push_enabled: true,
        push_next_at: Some(now - 1),
        ..off.clone()
    };
    let err = store
        .update_push_settings(
            "L1",
            "I1",
            &on,
            read.version,
            now + 11,
            &event("instance.update", "instance", "I1"),
        )
        .await
        .expect_err("push settings from an old version");
    assert!(
        matches!(err, StoreError::Stale("instance")),
        "stale push settings are refused as stale: {err:?}"
    );
    assert_eq!(get_instance(&store, "L1", "I1").await, after);
    let err = store
        .update_push_settings(
            "L1",
            "IZ",
            &on,
            1,
            now + 11,
            &event("instance.update", "instance", "IZ"),
        )
        .await
        .expect_err("push settings of an instance that does not exist");
    assert_not_found(&err, "instance IZ of license L1 not found");

    // Credentials: Some(None) clears them, Some(Some(..)) replaces them.
    let cleared = store
        .update_push_settings(
            "L1",
            "I1",
            &PushSettings {
                credentials: Some(None),
                ..off.clone()
            },
            after.version,
            now + 12,
            &event("instance.update", "instance", "I1"),
        )
        .await
        .expect("clear the credentials");
    assert!(
        !cleared.has_credentials,
        "Some(None) clears the credentials"
    );
    let replaced = store
        .update_push_settings(
            "L1",
            "I1",
            &PushSettings {
                credentials: Some(Some("sealed-2".into())),
                ..on.clone()
            },
            cleared.version,
            now + 13,
            &event("instance.update", "instance", "I1"),
        )
        .await
        .expect("turn push on with new credentials");
    assert!(replaced.has_credentials && replaced.push_enabled);
    let job = store
        .claim_push("L1", "I1", "runner", now, now + 60)
        .await
        .expect("claim")
        .expect("the instance is pushable again");
    assert_eq!(
        job.credentials.as_deref(),
        Some("sealed-2"),
        "a push gets the credentials stored last"
    );

    // With push back on, the next push follows a renewal again.
    let renew = renewal("L1", "I1", "J2", "J3", now + 20);
    record(&store, &renew).await;
    assert_eq!(
        get_instance(&store, "L1", "I1").await.push_next_at,
        Some(renew.next_renewal_at)
    );

    assert_eq!(
        actions(&store, "instance", "I1").await,
        [
            "instance.update",
            "instance.update",
            "instance.update",
            "instance.bind"
        ],
        "one event per settings change; none for the stale one"
    );
    assert!(actions(&store, "instance", "IZ").await.is_empty());
}

// 4. Push.

async fn push_leases_are_exclusive_and_only_their_owner_finishes(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    add_license(&store, &license("L1", "A1", now)).await;
    let due = Instance {
        push_next_at: Some(now - 5),
        ..instance("L1", "I-due", "https://due.example/", true, now)
    };
    let later = Instance {
        push_next_at: Some(now + DAY),
        ..instance("L1", "I-later", "https://later.example/", true, now)
    };
    let off = Instance {
        push_next_at: Some(now - 5),
        ..instance("L1", "I-off", "https://off.example/", false, now)
    };
    bind(&store, &due, Some("sealed-due")).await;
    bind(&store, &later, None).await;
    bind(&store, &off, None).await;
    let events_before = all_events(&store).await.len();

    // Only the due, push-enabled instance is claimed, with its credentials.
    let jobs = store
        .claim_pushes("runner-a", now, now + 60, 10)
        .await
        .expect("claim pushes");
    let ids: Vec<&str> = jobs.iter().map(|j| j.instance.id.as_str()).collect();
    assert_eq!(
        ids,
        ["I-due"],
        "only the due instance with push on is claimed"
    );
    assert_eq!(jobs[0].credentials.as_deref(), Some("sealed-due"));
    let leased = get_instance(&store, "L1", "I-due").await;
    assert_eq!(
        leased.version, 1,
        "a lease is not a change of the instance: its version stays"
    );

    // Nobody else gets it while the lease holds.
    assert!(
        store
            .claim_pushes("runner-b", now + 30, now + 90, 10)
            .await
            .expect("claim pushes")
            .is_empty(),
        "a second claim before the lease expires gets nothing"
    );
    assert!(
        store
            .claim_push("L1", "I-due", "runner-b", now + 30, now + 90)
            .await
            .expect("claim push")
            .is_none(),
        "nor does a claim of that one instance"
    );
    assert!(
        store
            .claim_push("L1", "I-off", "runner-b", now, now + 60)
            .await
            .expect("claim push")
            .is_none(),
        "an instance with push off is never claimed"
    );

    // The push job records the token it pushes as pending.
    let push = Issuance {
        token: token("L1", "I-due", "P1", TokenReason::Push, now),
        ..reissue("L1", "I-due", "P1", now)
    };
    record(&store, &push).await;
    let pending = get_instance(&store, "L1", "I-due").await;
    assert_eq!(pending.push_pending_jti.as_deref(), Some("P1"));
    assert_eq!(pending.last_jti.as_deref(), Some("P1"));
    assert_eq!(
        pending.push_next_at,
        Some(now - 5),
        "recording a pushed token leaves the push schedule to the outcome"
    );

    // Finishing: only the lease owner writes.
    let delivered = PushOutcome {
        push_next_at: Some(now + 7 * DAY),
        push_attempts: 0,
        push_last_error: None,
        push_last_ok_at: Some(now),
        push_at_risk: false,
        removal_pending: false,
        push_pending_jti: None,
        token_expires_at: Some(push.token.exp),
        events: Vec::new(),
    };
    assert!(
        !store
            .finish_push("I-due", "runner-b", &delivered)
            .await
            .expect("finish push"),
        "the wrong owner cannot finish"
    );
    assert_eq!(
        get_instance(&store, "L1", "I-due").await,
        pending,
        "the wrong owner writes nothing"
    );
    assert!(
        store
            .finish_push("I-due", "runner-a", &delivered)
            .await
            .expect("finish push"),
        "the lease owner finishes"
    );
    let done = get_instance(&store, "L1", "I-due").await;
    assert_eq!(
        PushOutcome {
            push_next_at: done.push_next_at,
            push_attempts: done.push_attempts,
            push_last_error: done.push_last_error.clone(),
            push_last_ok_at: done.push_last_ok_at,
            push_at_risk: done.push_at_risk,
            removal_pending: done.removal_pending,
            push_pending_jti: done.push_pending_jti.clone(),
            token_expires_at: done.token_expires_at,
            events: Vec::new(),
        },
        delivered,
        "the outcome is written"
    );
    assert_eq!(
        done.version,
        pending.version + 1,
        "an outcome bumps the version"
    );
    assert!(
        !store
            .finish_push("I-due", "runner-a", &delivered)
            .await
            .expect("finish push"),
        "a released lease cannot be finished twice"
    );

    // Released: another run may claim it (due or not) and record a failure.
    store
        .claim_push("L1", "I-due", "runner-b", now + 1, now + 61)
        .await
        .expect("claim push")
        .expect("a released instance can be claimed");
    let failed = PushOutcome {
        push_next_at: Some(now + 300),
        push_attempts: 1,
        push_last_error: Some("connection refused".into()),
        push_last_ok_at: Some(now),
        push_at_risk: true,
        ..delivered.clone()
    };
    assert!(
        store
            .finish_push("I-due", "runner-b", &failed)
            .await
            .expect("finish push")
    );
    assert_eq!(
        store.count_push_backoff().await.expect("count backoff"),
        (1, 1),
        "one instance backing off, and at risk"
    );

    // An expired lease is taken over, and its old owner can no longer finish.
    store
        .claim_push("L1", "I-later", "runner-a", now, now + 60)
        .await
        .expect("claim push")
        .expect("an instance may be claimed before it is due");
    assert!(
        store
            .claim_push("L1", "I-later", "runner-b", now + 59, now + 120)
            .await
            .expect("claim push")
            .is_none(),
        "the lease holds until it expires"
    );
    store
        .claim_push("L1", "I-later", "runner-b", now + 61, now + 120)
        .await
        .expect("claim push")
        .expect("an expired lease can be taken over");
    assert!(
        !store
            .finish_push("I-later", "runner-a", &delivered)
            .await
            .expect("finish push"),
        "a run that lost its lease writes nothing"
    );
    assert!(
        store
            .finish_push("I-later", "runner-b", &delivered)
            .await
            .expect("finish push")
    );

    assert_eq!(
        all_events(&store).await.len(),
        events_before + 1,
        "claims and outcomes are not audited; the pushed token is"
    );
}

// 5. A race at the store level.

async fn terms_updates_racing_a_revocation_each_leave_one_event(backend: Backend) {
    const WRITERS: usize = 20;
    /// Terms updates that succeed before the revocation goes in.
    const REVOKE_AFTER: u64 = 20;

    let (_data, store) = open(backend).await;
    let now = now();
    add_account(&store, "A1", now).await;
    let initial = add_license(&store, &license("L1", "A1", now)).await;

    // Writers: each edits the terms from the license it read, re-reading on
    // a stale version, until the license is revoked.
    let updates = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, updates) = (store.clone(), updates.clone());
        writers.spawn(async move {
            let (mut mine, mut stale) = (0u64, 0u64);
            loop {
                let read = get_license(&store, "L1").await;
                let edit = License {
                    terms: LicenseTerms {
                        included_users: read.terms.included_users + 1,
                        ..read.terms.clone()
                    },
                    updated_at: charter_token::now(),
                    ..read.clone()
                };
                let audit = event("license.update", "license", "L1");
                match store.update_license_terms(&edit, &read, None, &audit).await {
                    Ok(_) => {
                        mine += 1;
                        updates.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(StoreError::Stale(_)) => stale += 1,
                    Err(StoreError::NotActive {
                        status: LicenseStatus::Revoked,
                        ..
                    }) => return (mine, stale),
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
        });
    }

    // The revocation, once the writers are well under way.
    let revoker = {
        let (store, updates) = (store.clone(), updates.clone());
        tokio::spawn(async move {
            while updates.load(Ordering::SeqCst) < REVOKE_AFTER {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            store
                .transition_license(
                    "L1",
                    LicenseStatus::Revoked,
                    charter_token::now(),
                    &event("license.revoke", "license", "L1"),
                )
                .await
        })
    };

    let (succeeded, stale) = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut succeeded, mut stale) = (0u64, 0u64);
        while let Some(done) = writers.join_next().await {
            let (mine, their_stale) = done.expect("a writer panicked");
            succeeded += mine;
            stale += their_stale;
        }
        (succeeded, stale)
    })
    .await
    .expect("every writer stops once the license is revoked");
    let revocation = revoker
        .await
        .expect("the revoker panicked")
        .expect("revoke while the terms change");
    changed(revocation);

    let last = get_license(&store, "L1").await;
    assert_eq!(
        last.status,
        LicenseStatus::Revoked,
        "the license ends revoked"
    );
    assert_eq!(
        store.revoked_licenses().await.expect("revoked licenses"),
        ["L1"]
    );
    assert!(
        succeeded >= REVOKE_AFTER,
        "{succeeded} updates before the revocation ({stale} stale retries)"
    );
    assert_eq!(
        u64::try_from(events_of(&store, "license.update", "L1").await.len()).ok(),
        Some(succeeded),
        "one license.update event per successful update ({stale} stale retries)"
    );
    assert_eq!(
        events_of(&store, "license.revoke", "L1").await.len(),
        1,
        "one revocation event"
    );
    assert_eq!(
        u64::try_from(last.terms.included_users - initial.terms.included_users).ok(),
        Some(succeeded),
        "no update was lost: each one built on the last"
    );
    assert_eq!(
        u64::try_from(last.version - initial.version).ok(),
        Some(succeeded + 1),
        "every update and the revocation bumped the version once; nothing after"
    );
}

// 6. Access.

async fn access_changes_audit_the_rows_they_create(backend: Backend) {
    let (_data, store) = open(backend).await;
    let now = now();

    // A new account's event names the id the store gave it.
    let ci = NewServiceAccount {
        name: "ci",
        login: "sa-ci",
        role: Role::Editor,
        is_disabled: false,
        now,
    };
    let sa = store
        .insert_service_account(ci, &event("serviceaccount.create", "serviceaccount", ""))
        .await
        .expect("create a service account");
    assert_eq!(
        (sa.name.as_str(), sa.login.as_str(), sa.role, sa.tokens),
        ("ci", "sa-ci", Role::Editor, 0)
    );
    let sa_id = sa.id.to_string();
    assert_eq!(
        actions(&store, "serviceaccount", &sa_id).await,
        ["serviceaccount.create"],
        "the event's target is the new account's id"
    );
    let err = store
        .insert_service_account(
            NewServiceAccount {
                login: "sa-ci-2",
                ..ci
            },
            &event("serviceaccount.create", "serviceaccount", ""),
        )
        .await
        .expect_err("a second service account with the same name");
    assert_conflict(&err, "service account ci already exists");
    assert_eq!(
        audit(
            &store,
            AuditFilter {
                action: Some("serviceaccount.create".into()),
                ..AuditFilter::default()
            }
        )
        .await
        .len(),
        1,
        "no event for the refused account"
    );

    // So does a new token's.
    let deploy = NewSaToken {
        service_account_id: sa.id,
        name: "deploy",
        hash: "hash-1",
        now,
        expires_at: None,
    };
    let t = store
        .insert_sa_token(
            deploy,
            &event("serviceaccount.token.create", "serviceaccount_token", ""),
        )
        .await
        .expect("create a token");
    assert_eq!(
        actions(&store, "serviceaccount_token", &t.id.to_string()).await,
        ["serviceaccount.token.create"],
        "the event's target is the new token's id"
    );
    let err = store
        .insert_sa_token(
            NewSaToken {
                hash: "hash-2",
                ..deploy
            },
            &event("serviceaccount.token.create", "serviceaccount_token", ""),
        )
        .await
        .expect_err("a second token with the same name");
    assert_conflict(
        &err,
        &format!("service account {} already has a token named deploy", sa.id),
    );
    assert_eq!(
        audit(
            &store,
            AuditFilter {
                action: Some("serviceaccount.token.create".into()),
                ..AuditFilter::default()
            }
        )
        .await
        .len(),
        1,
        "no event for the refused token"
    );
    let (found, owner) = store
        .find_sa_token("hash-1")
        .await
        .expect("find token")
        .expect("the token is found by its hash");
    assert_eq!((found.id, owner.id, owner.tokens), (t.id, sa.id, 1));

    // Changes that find nothing say so and write no event.
    let events_before = all_events(&store).await.len();
    let missing = sa.id + 1000;
    assert!(
        !store
            .delete_service_account(
                missing,
                &event(
                    "serviceaccount.delete",
                    "serviceaccount",
                    &missing.to_string()
                )
            )
            .await
            .expect("delete a missing service account"),
        "deleting a service account that does not exist"
    );
    assert!(
        !store
            .delete_sa_token(
                Some(sa.id),
                t.id + 1000,
                &event("serviceaccount.token.delete", "serviceaccount_token", "x")
            )
            .await
            .expect("delete a missing token"),
        "deleting a token that does not exist"
    );
    assert!(
        !store
            .delete_sa_token(
                Some(missing),
                t.id,
                &event("serviceaccount.token.delete", "serviceaccount_token", "x")
            )
            .await
            .expect("delete another account's token"),
        "a token is deleted only through its own account"
    );
    let err = store
        .update_service_account(
            &ServiceAccount {
                id: missing,
                ..sa.clone()
            },
            &event(
                "serviceaccount.update",
                "serviceaccount",
                &missing.to_string(),
            ),
        )
        .await
        .expect_err("updating a service account that does not exist");
    assert_not_found(&err, &format!("service account {missing} not found"));
    assert_eq!(
        all_events(&store).await.len(),
        events_before,
        "no event for changes that found nothing"
    );
    assert!(
        store
            .find_sa_token("hash-1")
            .await
            .expect("find token")
            .is_some(),
        "the token survived the attempts"
    );

    // Deleting the account takes its tokens with it, with one event.
    assert!(
        store
            .delete_service_account(
                sa.id,
                &event("serviceaccount.delete", "serviceaccount", &sa_id)
            )
            .await
            .expect("delete the service account")
    );
    assert!(
        store
            .find_sa_token("hash-1")
            .await
            .expect("find token")
            .is_none(),
        "its tokens went with it"
    );
    assert!(
        store
            .get_service_account(sa.id)
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        actions(&store, "serviceaccount", &sa_id).await,
        ["serviceaccount.delete", "serviceaccount.create"]
    );
    assert_eq!(all_events(&store).await.len(), events_before + 1);
}
