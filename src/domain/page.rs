//! Pages of a list: by cursor (keyset: "the items after this one", at the
//! same cost however deep) or, for older clients, by page number (OFFSET:
//! the database walks every item before the page).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Account, AuditEvent, Instance, License, ServiceAccount, TokenRecord};

/// Counting the items that match a list's filters stops here: a page
/// costs the same with a million matching rows as with a thousand.
pub const COUNT_CAP: i64 = 1000;

/// Where a list resumes: the sort key of the last item of the page before.
/// Opaque to clients (URL-safe base64 of `<n>:<s>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The numeric part of the key (a time), or the id of a row keyed by
    /// name.
    pub n: i64,
    /// The text part of the key (an id, or a name).
    pub s: String,
}

impl Cursor {
    pub fn new(n: i64, s: impl Into<String>) -> Cursor {
        Cursor { n, s: s.into() }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.n, self.s))
    }

    /// `None` for anything [`Cursor::encode`] did not make.
    pub fn decode(text: &str) -> Option<Cursor> {
        if text.len() > 1024 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (n, s) = raw.split_once(':')?;
        Some(Cursor {
            n: n.parse().ok()?,
            s: s.to_string(),
        })
    }

    /// The text part as a number (keys whose second part is a row id).
    pub fn id(&self) -> Option<i64> {
        self.s.parse().ok()
    }
}

/// Which items of a list: `per_page` of them, after `after` (keyset) or
/// from page `page` (1-based; OFFSET). With `after`, `page` is 1.
#[derive(Debug, Clone)]
pub struct Page {
    /// 1-based.
    pub page: i64,
    pub per_page: i64,
    pub after: Option<Cursor>,
}

impl Page {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

/// A page of items as a store lists them.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// The items matching the filters, counted up to [`COUNT_CAP`] + 1.
    pub counted: i64,
    /// Whether items follow this page.
    pub more: bool,
}

impl<T> Listing<T> {
    /// `per_page + 1` rows read: the last only says that more follow.
    pub fn from_rows(mut items: Vec<T>, per_page: i64, counted: i64) -> Listing<T> {
        let more = items.len() as i64 > per_page;
        items.truncate(per_page.max(0) as usize);
        Listing {
            items,
            counted,
            more,
        }
    }

    /// The count as shown: exact up to [`COUNT_CAP`], else the cap.
    pub fn total(&self) -> (i64, bool) {
        if self.counted > COUNT_CAP {
            (COUNT_CAP, false)
        } else {
            (self.counted, true)
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Listing<U> {
        Listing {
            items: self.items.into_iter().map(f).collect(),
            counted: self.counted,
            more: self.more,
        }
    }
}

impl<T: Keyed> Listing<T> {
    /// The cursor of the next page, when there is one.
    pub fn next(&self) -> Option<Cursor> {
        if self.more {
            self.items.last().map(Keyed::cursor)
        } else {
            None
        }
    }
}

/// An item's place in its list, as a [`Cursor`].
pub trait Keyed {
    fn cursor(&self) -> Cursor;
}

impl Keyed for AuditEvent {
    /// Newest first: `at`, then `id`.
    fn cursor(&self) -> Cursor {
        Cursor::new(self.at, self.id.to_string())
    }
}

impl Keyed for super::Delivery {
    /// Newest first: `created_at`, then `id`.
    fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id.to_string())
    }
}

impl Keyed for License {
    fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, &self.lid)
    }
}

impl Keyed for Account {
    fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, &self.id)
    }
}

impl Keyed for Instance {
    fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, &self.id)
    }
}

impl Keyed for TokenRecord {
    /// Newest first: `iat`, then `jti`.
    fn cursor(&self) -> Cursor {
        Cursor::new(self.iat, &self.jti)
    }
}

impl Keyed for ServiceAccount {
    /// By name, then id.
    fn cursor(&self) -> Cursor {
        Cursor::new(self.id, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_make() {
        let c = Cursor::new(-5, "a:b/é");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "!!", "bm9jb2xvbg", &"A".repeat(2000)] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_listing_knows_whether_more_follow_and_caps_its_count() {
        let l = Listing::from_rows(vec![1, 2, 3], 2, 5000);
        assert_eq!(l.items, [1, 2]);
        assert!(l.more);
        assert_eq!(l.total(), (COUNT_CAP, false));
        let l = Listing::from_rows(vec![1, 2], 2, 2);
        assert!(!l.more);
        assert_eq!(l.total(), (2, true));
    }
}
