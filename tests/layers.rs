//! The issuer's layers, checked on its source: HTTP (`api`) on top of the
//! use cases (`licensing`), which sit on storage (`db`) and the rules
//! (`domain`); the push job and the metrics never reach up into the HTTP
//! layer, and no two top-level modules import each other in a cycle.
//!
//! Run alone: `cargo test --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names (`crate::x`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let re = regex::Regex::new(r"crate::([a-z_]+)").expect("regex");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("a component");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let deps = graph.entry(module.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for cap in re.captures_iter(code) {
                    if cap[1] != module {
                        deps.insert(cap[1].to_string());
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn the_push_job_use_cases_and_storage_do_not_import_the_http_layer() {
    let graph = imports();
    for module in [
        "licensing",
        "push",
        "db",
        "domain",
        "metrics",
        "config",
        "ratelimit",
    ] {
        let deps = graph.get(module).expect(module);
        assert!(
            !deps.contains("api") && !deps.contains("serve"),
            "{module} imports {deps:?}"
        );
    }
}

#[test]
fn no_two_modules_import_each_other_in_a_cycle() {
    let graph = imports();
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}
