//! The README's configuration table matches `charter serve --help`: every
//! flag is listed with its environment variable and TOML key, and nothing
//! listed is gone.

use std::process::Command;

#[test]
fn readme_lists_every_serve_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");

    // (flag, env) pairs from the help text.
    let mut settings = Vec::new();
    let mut flag = None;
    for line in help.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("--") {
            flag = rest.split_whitespace().next().map(str::to_string);
        }
        if let (Some(f), Some(env)) = (&flag, line.split("[env: ").nth(1)) {
            let env = env.trim_end_matches(']').trim_end_matches('=').to_string();
            settings.push((f.clone(), env));
            flag = None;
        }
    }
    assert!(settings.len() >= 10, "parsed the help: {settings:?}");

    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `--")).collect();
    for (flag, env) in &settings {
        let expected = if flag == "config" {
            format!("| `--{flag}` | `{env}` |")
        } else {
            format!("| `--{flag}` | `{env}` | `{}` |", flag.replace('-', "_"))
        };
        assert!(
            rows.iter().any(|r| r.starts_with(&expected)),
            "README.md has no row starting with {expected}"
        );
    }
    for row in rows {
        assert!(
            settings
                .iter()
                .any(|(f, _)| row.starts_with(&format!("| `--{f}` "))),
            "README.md lists a setting `charter serve` does not have: {row}"
        );
    }
}
