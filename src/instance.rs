//! `charter instance`: the client crate's licensing endpoints standalone on
//! one port (grafana, consul and redis dialects over one manager), with
//! background renewal, for demos and end-to-end tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use charter_client::api::{self, ApiState, Dialect};
use charter_client::token::{InstanceUrl, KeySet};
use charter_client::{BasicAuth, FileStore, LicenseManager, ManagerConfig};

/// Flags of `charter instance`.
#[derive(Debug, clap::Args)]
pub struct InstanceArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "CHARTER_INSTANCE_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// The issuer's base URL (renewal, key refresh and revocations).
    #[arg(long, env = "CHARTER_INSTANCE_ISSUER")]
    pub issuer: Option<String>,
    /// The product(s) this instance is, comma-separated or repeated: a
    /// token is valid only if its `prod` names one of them (default: not
    /// checked).
    #[arg(
        long = "product",
        env = "CHARTER_INSTANCE_PRODUCTS",
        value_delimiter = ',',
        value_name = "SLUG"
    )]
    pub products: Vec<String>,
    /// The issuer a token must come from: its `iss` (the issuer's public
    /// URL) must be this URL (default: not checked). `--issuer` is where the
    /// instance calls, which may be another address.
    #[arg(long, env = "CHARTER_INSTANCE_EXPECTED_ISSUER", value_name = "URL")]
    pub expected_issuer: Option<String>,
    /// This instance's root URL, matched against each token's `sub`.
    #[arg(long, env = "CHARTER_INSTANCE_ROOT_URL")]
    pub root_url: String,
    /// Data directory holding `license.jwt`.
    #[arg(long, env = "CHARTER_INSTANCE_DATA", default_value = "./instance-data")]
    pub data: PathBuf,
    /// Dialects to serve, comma-separated.
    #[arg(
        long,
        env = "CHARTER_INSTANCE_DIALECTS",
        value_delimiter = ',',
        default_value = "grafana,consul,redis"
    )]
    pub dialects: Vec<Dialect>,
    /// The vendor's public keys: a JWKS file, or a URL to fetch it from
    /// (default `<issuer>/.well-known/jwks.json`).
    #[arg(long, env = "CHARTER_INSTANCE_JWKS", value_name = "FILE_OR_URL")]
    pub jwks: Option<String>,
    /// The admin user of HTTP Basic authentication.
    #[arg(long, env = "CHARTER_INSTANCE_ADMIN_USER", default_value = "admin")]
    pub admin_user: String,
    /// The admin's password (required).
    #[arg(long, env = "CHARTER_INSTANCE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// How often to fetch the issuer's signed list of revoked licenses, in seconds.
    #[arg(
        long,
        env = "CHARTER_INSTANCE_REVOCATIONS_INTERVAL_SECS",
        default_value_t = 600
    )]
    pub revocations_interval_secs: u64,
    /// How often to re-read the vendor's keys (the JWKS), in seconds; also
    /// the least time between two reads on an unknown `kid` (at most 300).
    #[arg(
        long,
        env = "CHARTER_INSTANCE_JWKS_REFRESH_SECS",
        default_value_t = 3600
    )]
    pub jwks_refresh_secs: u64,
    /// A license token file the instance ships with (Consul's DELETE reverts to it).
    #[arg(long, env = "CHARTER_INSTANCE_BUILTIN_LICENSE", value_name = "FILE")]
    pub builtin_license: Option<PathBuf>,
    /// At start, forget the latest time seen by the clock rollback guard
    /// (`license.seen`), after the clock ran ahead and was set right; the
    /// newest time the issuer vouched for still holds. Then serve as usual.
    #[arg(long)]
    pub reset_clock_guard: bool,
}

pub fn run(args: InstanceArgs) -> anyhow::Result<()> {
    // Same conventions as `charter serve`: CHARTER_LOG filter, logs on stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHARTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: InstanceArgs) -> anyhow::Result<()> {
    let Some(password) = args.admin_password.clone().filter(|p| !p.is_empty()) else {
        bail!("--admin-password (or CHARTER_INSTANCE_ADMIN_PASSWORD) is required");
    };
    if args.dialects.is_empty() {
        bail!("--dialects names no dialect");
    }
    let root_url = InstanceUrl::parse_instance(&args.root_url)
        .with_context(|| format!("--root-url {:?}", args.root_url))?;
    let issuer = args
        .issuer
        .as_deref()
        .map(|i| validate_http_url(i, "--issuer"))
        .transpose()?;
    let expected_issuer = args
        .expected_issuer
        .as_deref()
        .map(|i| validate_http_url(i, "--expected-issuer"))
        .transpose()?;
    let products: Vec<String> = args
        .products
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let keys = load_keys(args.jwks.as_deref(), issuer.as_deref()).await?;
    let builtin = match &args.builtin_license {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--builtin-license {}", path.display()))?,
        ),
        None => None,
    };
    let store = FileStore::open(&args.data).with_context(|| format!("--data {:?}", args.data))?;

    // No key is pinned: the keys follow their source (the issuer's JWKS or
    // the --jwks file), so a key retired there stops being trusted here.
    let mut cfg = ManagerConfig::new(root_url, KeySet::default(), Arc::new(store));
    cfg.issuer = issuer;
    cfg.jwks_keys = keys.initial;
    cfg.jwks_url = keys.url;
    cfg.jwks_file = keys.file;
    cfg.products = (!products.is_empty()).then_some(products);
    cfg.expected_issuer = expected_issuer;
    cfg.builtin_license = builtin;
    cfg.revocations_interval =
        std::time::Duration::from_secs(args.revocations_interval_secs.max(1));
    let refresh = Duration::from_secs(args.jwks_refresh_secs.max(1));
    cfg.jwks_refresh_interval = refresh;
    cfg.jwks_min_interval = cfg.jwks_min_interval.min(refresh);
    let manager = LicenseManager::start(cfg)
        .await
        .context("loading the stored license")?;
    if args.reset_clock_guard {
        manager
            .reset_clock_guard()
            .await
            .context("resetting the clock rollback guard")?;
    }
    let info = manager.state_info();
    tracing::info!(status = info.status.as_str(), reason = ?info.reason, "license loaded");
    let background = manager.spawn_background();

    let auth = Arc::new(BasicAuth::new(args.admin_user.clone(), password));
    let app = api::routers(ApiState::new(manager, auth), &args.dialects);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let names: Vec<&str> = args.dialects.iter().map(|d| d.as_str()).collect();
    tracing::info!(addr = %listener.local_addr()?, dialects = ?names, "charter instance listening");
    // The peer's address reaches the admin auth's failure limit; slow
    // clients are cut off as on the issuer.
    let limits = crate::http::Limits {
        request_timeout: std::time::Duration::from_secs(30),
        max_connections: 1024,
    };
    crate::http::serve(listener, app, limits, shutdown_signal())
        .await
        .context("serving")?;
    background.abort();
    tracing::info!("charter instance stopped");
    Ok(())
}

fn validate_http_url(s: &str, flag: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(s).with_context(|| format!("{flag} {s:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{flag} must be an http(s) URL, not {s:?}");
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// The vendor's keys as known at start, and where to refresh them from.
struct Keys {
    initial: KeySet,
    url: Option<String>,
    file: Option<PathBuf>,
}

/// The keys at start and their source. A file must read, and is then the
/// source (re-read on an unknown `kid` and every hour: keys removed from it
/// stop being trusted); the issuer's JWKS may be unreachable at start (keys
/// are then fetched when a token is first seen).
async fn load_keys(jwks: Option<&str>, issuer: Option<&str>) -> anyhow::Result<Keys> {
    let default_url = issuer.map(|i| format!("{i}/.well-known/jwks.json"));
    let (url, required) = match jwks {
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
            (validate_http_url(s, "--jwks")?, true)
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--jwks {path}"))?;
            let keys = KeySet::from_jwks_json(&text).with_context(|| format!("--jwks {path}"))?;
            if keys.is_empty() {
                bail!("--jwks {path}: no usable key");
            }
            return Ok(Keys {
                initial: keys,
                url: None,
                file: Some(PathBuf::from(path)),
            });
        }
        None => match default_url {
            Some(u) => (u, false),
            None => bail!("give --issuer or --jwks: no way to know the vendor's keys"),
        },
    };
    let initial = match fetch_jwks(&url).await {
        Ok(keys) => keys,
        Err(e) if !required => {
            tracing::warn!(url = %url, error = %e, "issuer keys unavailable; will fetch on first use");
            KeySet::default()
        }
        Err(e) => return Err(e.context(format!("--jwks {url}"))),
    };
    Ok(Keys {
        initial,
        url: Some(url),
        file: None,
    })
}

async fn fetch_jwks(url: &str) -> anyhow::Result<KeySet> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let text = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(KeySet::from_jwks_json(&text)?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InstanceArgs,
    }

    fn parse(extra: &[&str]) -> InstanceArgs {
        let mut argv = vec!["instance", "--root-url", "http://127.0.0.1:8081/"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.args,
            Err(e) => panic!("{e}"),
        }
    }

    /// Findings 13 and 5: the product and issuer checks and the clock
    /// guard reset are flags.
    #[test]
    fn product_issuer_and_reset_flags_parse() {
        let args = parse(&[
            "--product",
            "consul-enterprise,consul-cloud",
            "--product",
            "consul-plus",
            "--expected-issuer",
            "https://licenses.vendor.example/",
            "--reset-clock-guard",
        ]);
        assert_eq!(
            args.products,
            vec!["consul-enterprise", "consul-cloud", "consul-plus"]
        );
        assert_eq!(
            args.expected_issuer.as_deref(),
            Some("https://licenses.vendor.example/")
        );
        assert!(args.reset_clock_guard);
        let args = parse(&[]);
        assert!(args.products.is_empty());
        assert_eq!(args.expected_issuer, None);
        assert!(!args.reset_clock_guard);
    }

    /// Finding 19: keys read from `--jwks FILE` are not pinned: the file is
    /// their source, so a key removed from it stops verifying.
    #[tokio::test]
    async fn a_jwks_file_is_the_source_of_keys_not_a_pin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let pem =
            charter_client::token::keys::generate_pem(charter_client::token::KeyAlg::EdDsa, 0)
                .expect("generates");
        let key = charter_client::token::SigningKey::from_pem(&pem).expect("parses");
        let ring = charter_client::token::Keyring::from_keys(key, vec![]);
        std::fs::write(&path, serde_json::to_string(&ring.jwks()).expect("json")).expect("writes");
        let path_str = path.to_string_lossy().to_string();
        let keys = load_keys(Some(&path_str), Some("http://127.0.0.1:9"))
            .await
            .expect("reads");
        assert_eq!(keys.initial.len(), 1);
        assert_eq!(keys.file.as_deref(), Some(path.as_path()));
        assert_eq!(keys.url, None, "the file is the source, not the issuer");

        // Without --jwks, the issuer's JWKS (unreachable here) is the source.
        let keys = load_keys(None, Some("http://127.0.0.1:9"))
            .await
            .expect("ok");
        assert!(keys.initial.is_empty());
        assert_eq!(
            keys.url.as_deref(),
            Some("http://127.0.0.1:9/.well-known/jwks.json")
        );
        assert_eq!(keys.file, None);
    }

    #[test]
    fn a_root_url_pattern_is_refused() {
        assert!(InstanceUrl::parse_instance("https://*.example.com/").is_err());
    }
}
