//! The constraints the OpenAPI document states (patterns, lengths, ranges)
//! are the ones the API enforces: a value the schema allows is accepted and
//! one it refuses is answered 400, for samples on both sides of each limit.

mod common;

use common::{Backend, TestApp};
use serde_json::{Value, json};

/// Whether `v` meets the string constraints of `schema`.
fn allows(schema: &Value, v: &str) -> bool {
    let len = v.chars().count() as u64;
    let min = schema["minLength"].as_u64().unwrap_or(0);
    let max = schema["maxLength"].as_u64().unwrap_or(u64::MAX);
    let pattern = schema["pattern"].as_str().map(|p| {
        regex::Regex::new(p).unwrap_or_else(|e| panic!("pattern {p:?} does not compile: {e}"))
    });
    (min..=max).contains(&len) && pattern.is_none_or(|re| re.is_match(v))
}

fn property<'a>(doc: &'a Value, schema: &str, field: &str) -> &'a Value {
    let mut p = &doc["components"]["schemas"][schema]["properties"][field];
    // A value type (`Slug`, `Text`) states its rule once, as a component.
    if let Some(r) = p["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        p = &doc["components"]["schemas"][name];
    }
    assert!(p.is_object(), "{schema}.{field} is not in the document");
    assert!(
        p.get("pattern").is_some() || p.get("maxLength").is_some(),
        "{schema}.{field} states no constraint"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stated_constraints_are_the_enforced_ones() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (s, doc) = app.get("/api/openapi.json").await;
    assert_eq!(s, 200);

    let company = property(&doc, "NewAccount", "company");
    let slug = property(&doc, "NewAccount", "slug");
    let texts = [
        "Acme".to_string(),
        " Acme GmbH ".into(),
        "Ünïcödé ✓".into(),
        "".into(),
        "   ".into(),
        "a\u{1}b".into(),
        "a\u{7f}b".into(),
        "a\u{85}b".into(),
        "tab\there".into(),
        "x".repeat(200),
        "x".repeat(201),
    ];
    let mut n = 0;
    for text in &texts {
        n += 1;
        let (s, body) = app
            .post(
                "/api/accounts",
                json!({"company": text, "slug": format!("t{n}")}),
            )
            .await;
        let expected = if allows(company, text) { 201 } else { 400 };
        assert_eq!(s, expected, "company {text:?}: {body}");
    }
    let slugs = [
        "acme".to_string(),
        "a_b.c-d9".into(),
        "9lives".into(),
        "Acme".into(),
        "-acme".into(),
        ".acme".into(),
        "a b".into(),
        "".into(),
        "é".into(),
        "s".repeat(64),
        "s".repeat(65),
    ];
    for sl in &slugs {
        let (s, body) = app
            .post("/api/accounts", json!({"company": "Slugs", "slug": sl}))
            .await;
        let expected = if allows(slug, sl) { 201 } else { 400 };
        assert_eq!(s, expected, "slug {sl:?}: {body}");
    }

    // Page parameters: the stated minimum and maximum, and one past each.
    let params = doc["paths"]["/api/accounts"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    for name in ["page", "per_page"] {
        let p = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} parameter"));
        let min = p["schema"]["minimum"].as_i64().expect("minimum");
        let max = p["schema"]["maximum"].as_i64().expect("maximum");
        for (v, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
            let (s, body) = app.get(&format!("/api/accounts?{name}={v}")).await;
            assert_eq!(s, if ok { 200 } else { 400 }, "{name}={v}: {body}");
        }
    }

    // Numbers of a license: the range stated for max_instances.
    let max_instances =
        &doc["components"]["schemas"]["LicenseInput"]["properties"]["max_instances"];
    let (lo, hi) = (
        max_instances["minimum"].as_i64().expect("minimum"),
        max_instances["maximum"].as_i64().expect("maximum"),
    );
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    for (v, ok) in [(lo, true), (hi, true), (lo - 1, false), (hi + 1, false)] {
        let (s, body) = app
            .patch(&format!("/api/licenses/{lid}"), json!({"max_instances": v}))
            .await;
        assert_eq!(s, if ok { 200 } else { 400 }, "max_instances {v}: {body}");
    }
    app.stop().await;
}
