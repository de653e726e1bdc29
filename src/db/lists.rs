//! The list queries of both stores, built from the filters present.
//!
//! A filter that is absent is left out of the SQL, never bound as NULL in
//! a `(?1 IS NULL OR col = ?1)` form: SQLite's planner cannot use an index
//! through that form (it scanned the whole audit trail for a filter by
//! actor: 1.5 s at 1.2M events, issue 17), nor can PostgreSQL's generic
//! plans. Each list is ordered by a key its index holds, and a page after
//! a cursor is a range on that key (keyset), so a deep page costs what the
//! first does. Counting stops at [`COUNT_CAP`] + 1 rows.
//!
//! Placeholders are SQLite's `?N`; the PostgreSQL store converts them with
//! [`super::sql::pg`].

use crate::domain::{AuditFilter, COUNT_CAP, LicenseFilter, Page};

/// A bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
}

/// A statement and its values.
#[derive(Debug, Clone)]
pub struct Query {
    pub sql: String,
    pub args: Vec<Arg>,
}

/// A list: the page's rows (one more than asked, to tell whether more
/// follow) and the capped count.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub rows: Query,
    pub count: Query,
}

/// The dialect, where the SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Default)]
struct Where {
    conds: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    /// Binds a value; returns its placeholder.
    fn bind(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("?{}", self.args.len())
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(Arg::Text(s.to_string()))
    }

    fn int(&mut self, n: i64) -> String {
        self.bind(Arg::Int(n))
    }

    fn and(&mut self, cond: String) {
        self.conds.push(cond);
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }
}

/// Sort direction of a list's key.
#[derive(Clone, Copy)]
enum Order {
    Asc,
    Desc,
}

/// The types of a list's key `(k1, k2)` and which part of a [`Cursor`]
/// each takes.
#[derive(Clone, Copy)]
enum Key {
    /// `k1` a number (`Cursor::n`), `k2` a text (`Cursor::s`).
    NumText,
    /// `k1` a number (`Cursor::n`), `k2` a row id (`Cursor::s`, parsed).
    NumId,
    /// `k1` a text (`Cursor::s`), `k2` a row id (`Cursor::n`).
    TextId,
}

/// Finishes a list: the cursor as a range on the key columns `k1, k2`,
/// the order, the limit (one more than a page) and the offset; and the
/// capped count.
fn finish(
    mut w: Where,
    from: &str,
    cols: &str,
    key: (&str, &str),
    order: Order,
    kind: Key,
    page: &Page,
) -> ListQuery {
    let count = Query {
        sql: format!(
            "SELECT count(*) FROM (SELECT 1 FROM {from}{} LIMIT {}) AS matching",
            w.sql(),
            COUNT_CAP + 1
        ),
        args: w.args.clone(),
    };
    let (cmp, dir) = match order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if let Some(c) = &page.after {
        let (k1, k2) = match kind {
            Key::NumText => (w.int(c.n), w.text(&c.s)),
            // A cursor of another list (its text not an id) is as good as
            // any: the list goes on from the nearest key.
            Key::NumId => (w.int(c.n), w.int(c.id().unwrap_or(i64::MIN))),
            Key::TextId => (w.text(&c.s), w.int(c.n)),
        };
        w.and(format!("({}, {}) {cmp} ({k1}, {k2})", key.0, key.1));
    }
    let limit = w.int(page.per_page + 1);
    let offset = w.int(page.offset());
    ListQuery {
        rows: Query {
            sql: format!(
                "SELECT {cols} FROM {from}{} ORDER BY {k1} {dir}, {k2} {dir} LIMIT {limit} OFFSET {offset}",
                w.sql(),
                k1 = key.0,
                k2 = key.1,
            ),
            args: w.args,
        },
        count,
    }
}

/// `GET /api/audit`: newest first, by `(at, id)`. Indexes: `(at, id)`,
/// `(actor, at, id)`, `(action, at, id)`, `(target_id, at, id)`.
pub fn audit(f: &AuditFilter, page: &Page, cols: &str) -> ListQuery {
    let mut w = Where::default();
    for (col, v) in [
        ("actor", &f.actor),
        ("action", &f.action),
        ("target_id", &f.target_id),
        ("target_type", &f.target_type),
    ] {
        if let Some(v) = v {
            let p = w.text(v);
            w.and(format!("{col} = {p}"));
        }
    }
    if let Some(since) = f.since {
        let p = w.int(since);
        w.and(format!("at >= {p}"));
    }
    if let Some(until) = f.until {
        let p = w.int(until);
        w.and(format!("at < {p}"));
    }
    finish(
        w,
        "audit_events",
        cols,
        ("at", "id"),
        Order::Desc,
        Key::NumId,
        page,
    )
}

/// `GET /api/licenses`: oldest first, by `(created_at, lid)`; by account
/// through `(account_id, created_at, lid)`.
pub fn licenses(f: &LicenseFilter, page: &Page, cols: &str, d: Dialect) -> ListQuery {
    let (status, expired, started) = super::sql::state_filter(f.state);
    let mut w = Where::default();
    if let Some(a) = &f.account_id {
        let p = w.text(a);
        w.and(format!("account_id = {p}"));
    }
    if let Some(s) = status {
        let p = w.text(s);
        w.and(format!("status = {p}"));
    }
    if let Some(e) = expired {
        let p = w.int(f.now);
        w.and(format!("expires_at {} {p}", if e { "<=" } else { ">" }));
    }
    if let Some(s) = started {
        let p = w.int(f.now);
        w.and(format!("starts_at {} {p}", if s { "<=" } else { ">" }));
    }
    if let Some(before) = f.expires_before {
        let p = w.int(before);
        w.and(format!("expires_at < {p}"));
    }
    if let Some(product) = &f.product {
        let p = w.text(product);
        w.and(match d {
            Dialect::Sqlite => {
                format!("EXISTS (SELECT 1 FROM json_each(terms, '$.products') WHERE value = {p})")
            }
            Dialect::Postgres => format!("terms->'products' ? {p}"),
        });
    }
    finish(
        w,
        "licenses",
        cols,
        ("created_at", "lid"),
        Order::Asc,
        Key::NumText,
        page,
    )
}

/// `GET /api/accounts`: oldest first, by `(created_at, id)`.
pub fn accounts(page: &Page, cols: &str) -> ListQuery {
    finish(
        Where::default(),
        "accounts",
        cols,
        ("created_at", "id"),
        Order::Asc,
        Key::NumText,
        page,
    )
}

/// `GET /api/licenses/{lid}/instances`: oldest first, by
/// `(lid, created_at, id)`.
pub fn instances(lid: &str, page: &Page, cols: &str) -> ListQuery {
    let mut w = Where::default();
    let p = w.text(lid);
    w.and(format!("lid = {p}"));
    finish(
        w,
        "instances",
        cols,
        ("created_at", "id"),
        Order::Asc,
        Key::NumText,
        page,
    )
}

/// `GET /api/licenses/{lid}/tokens`: newest first, by `(lid, iat, jti)`.
pub fn tokens(lid: &str, page: &Page, cols: &str) -> ListQuery {
    let mut w = Where::default();
    let p = w.text(lid);
    w.and(format!("lid = {p}"));
    finish(
        w,
        "tokens",
        cols,
        ("iat", "jti"),
        Order::Desc,
        Key::NumText,
        page,
    )
}

/// `GET /api/webhooks/{id}/deliveries`: newest first, by
/// `(webhook_id, created_at, id)`.
pub fn deliveries(webhook_id: &str, page: &Page, cols: &str, from: &str) -> ListQuery {
    let mut w = Where::default();
    let p = w.text(webhook_id);
    w.and(format!("d.webhook_id = {p}"));
    finish(
        w,
        from,
        cols,
        ("d.created_at", "d.id"),
        Order::Desc,
        Key::NumId,
        page,
    )
}

/// `GET /api/serviceaccounts/search`: by name, then id; `query` a
/// case-insensitive part of the name or login (lower-cased by the caller;
/// `instr`/`strpos`, not LIKE: `%` and `_` are plain characters).
pub fn service_accounts(query: &str, page: &Page, cols: &str, d: Dialect) -> ListQuery {
    let mut w = Where::default();
    if !query.is_empty() {
        let p = w.text(query);
        let find = match d {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        };
        w.and(format!(
            "({find}(lower(s.name), {p}) > 0 OR {find}(lower(s.login), {p}) > 0)"
        ));
    }
    finish(
        w,
        "service_accounts s",
        cols,
        ("s.name", "s.id"),
        Order::Asc,
        Key::TextId,
        page,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Cursor;

    fn page(after: Option<Cursor>) -> Page {
        Page {
            page: 1,
            per_page: 50,
            after,
        }
    }

    #[test]
    fn absent_filters_are_left_out_and_a_cursor_is_a_range_on_the_key() {
        let q = audit(&AuditFilter::default(), &page(None), "id");
        assert_eq!(
            q.rows.sql,
            "SELECT id FROM audit_events ORDER BY at DESC, id DESC LIMIT ?1 OFFSET ?2"
        );
        let f = AuditFilter {
            actor: Some("a".into()),
            since: Some(5),
            ..Default::default()
        };
        let q = audit(&f, &page(Some(Cursor::new(9, "3"))), "id");
        assert_eq!(
            q.rows.sql,
            "SELECT id FROM audit_events WHERE actor = ?1 AND at >= ?2 AND (at, id) < (?3, ?4) \
             ORDER BY at DESC, id DESC LIMIT ?5 OFFSET ?6"
        );
        assert_eq!(
            q.count.sql,
            "SELECT count(*) FROM (SELECT 1 FROM audit_events WHERE actor = ?1 AND at >= ?2 LIMIT 1001) AS matching"
        );
        assert!(!q.rows.sql.contains("IS NULL"));
    }
}
