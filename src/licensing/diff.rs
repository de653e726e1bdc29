//! What a change changed, for its audit event: the fields whose JSON
//! differs between the row before and after, each as `{"old", "new"}`.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Fields never worth an entry: they change with every write.
const NOISE: [&str; 4] = ["updated_at", "version", "state", "created_at"];

/// `{"field": {"old": ..., "new": ...}}` for each top-level field of the
/// two serialised values that differs (both must serialise to objects).
pub fn changes<T: Serialize>(old: &T, new: &T) -> Value {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (k, after) in &new {
        if NOISE.contains(&k.as_str()) {
            continue;
        }
        let before = old.get(k).unwrap_or(&Value::Null);
        if before != after {
            out.insert(k.clone(), json!({"old": before, "new": after}));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        a: i64,
        b: Vec<String>,
        updated_at: i64,
    }

    #[test]
    fn names_each_changed_field_with_both_values() {
        let old = Row {
            a: 1,
            b: vec!["x".into()],
            updated_at: 1,
        };
        let new = Row {
            a: 2,
            b: vec!["x".into()],
            updated_at: 2,
        };
        assert_eq!(changes(&old, &new), json!({"a": {"old": 1, "new": 2}}));
        assert_eq!(changes(&old, &old), json!({}));
    }
}
