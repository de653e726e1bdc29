//! Values that state their rule once: each parses (and so deserialises)
//! only when valid, and describes the same rule to the OpenAPI document.
//! A handler that receives one has nothing left to check.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

/// Defines a string newtype: its doc, its check, and its schema.
macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $describe:expr, $check:expr, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What a valid value looks like, for error messages.
            pub const RULE: &'static str = $describe;

            pub fn parse(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok($name(s))
                } else {
                    Err(format!("{s:?} must be {}", Self::RULE))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let build: fn(ObjectBuilder) -> ObjectBuilder = $schema;
                build(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Type(Type::String))
                        .description(Some(Self::RULE)),
                )
                .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

/// The pattern of a slug, as the OpenAPI document states it.
pub const SLUG_PATTERN: &str = "^[a-z0-9][a-z0-9_.-]{0,63}$";

/// The pattern of a text field: no control characters (C0, DEL, C1), and
/// not blank.
pub const TEXT_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn is_text(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

string_value!(
    /// A short identifier: 1-64 lower-case letters, digits, `-`, `_` or
    /// `.`, starting with a letter or digit (products, account slugs, limit
    /// and flag names).
    Slug,
    "1-64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit",
    is_slug,
    |o| o.pattern(Some(SLUG_PATTERN)).min_length(Some(1)).max_length(Some(64))
);

string_value!(
    /// A name shown to people (a company, an account, a product): 1-200
    /// characters, not blank, no control characters.
    Text,
    "1-200 characters, not blank, without control characters",
    |s| is_text(s, 200),
    |o| o.pattern(Some(TEXT_PATTERN)).min_length(Some(1)).max_length(Some(200))
);

string_value!(
    /// A feature a product grants and a license enables, as products name
    /// them ("reporting", or Consul's "Automated Backups"): 1-64
    /// characters, not blank, no control characters.
    FeatureName,
    "1-64 characters, not blank, without control characters",
    |s| is_text(s, 64),
    |o| o.pattern(Some(TEXT_PATTERN)).min_length(Some(1)).max_length(Some(64))
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["acme", "a_b.c-d9", "9lives", &"s".repeat(64)] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "-acme", ".acme", "a b", "é", &"s".repeat(65)] {
            let e = Slug::parse(bad).expect_err(bad);
            assert!(e.contains("lower-case"), "{e}");
        }
    }

    #[test]
    fn feature_names_take_display_names() {
        for ok in ["reporting", "Automated Backups", "Ünïcödé ✓"] {
            assert!(FeatureName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "  ", "a\u{0}b", "tab\there", &"f".repeat(65)] {
            assert!(FeatureName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deserialising_checks_the_rule() {
        let ok: Text = serde_json::from_str("\"Acme GmbH\"").expect("valid");
        assert_eq!(ok.as_str(), "Acme GmbH");
        let e = serde_json::from_str::<Text>("\"a\\u0001b\"").expect_err("control");
        assert!(e.to_string().contains("control characters"), "{e}");
    }

    #[test]
    fn the_schema_states_the_pattern_the_check_applies() {
        let re = regex::Regex::new(TEXT_PATTERN).expect("pattern");
        for s in [
            "Acme",
            " Acme ",
            "   ",
            "a\u{1}b",
            "a\u{85}b",
            "tab\there",
            "",
        ] {
            assert_eq!(re.is_match(s), is_text(s, usize::MAX), "{s:?}");
        }
        let re = regex::Regex::new(SLUG_PATTERN).expect("pattern");
        for s in ["acme", "Acme", "-a", "a.b", "", "é"] {
            assert_eq!(re.is_match(s), is_slug(s), "{s:?}");
        }
    }
}
