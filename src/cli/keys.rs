//! `charter keys generate|list|rotate|retire|jwks`.

use std::path::PathBuf;

use anyhow::Context;
use charter_token::{KeyAlg, Keyring, keys};

/// Which kind of key to generate.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AlgArg {
    /// RSA PKCS#1 v1.5 with SHA-256 (the default; what every JWT library reads).
    Rs256,
    /// Ed25519.
    Eddsa,
}

impl From<AlgArg> for KeyAlg {
    fn from(a: AlgArg) -> Self {
        match a {
            AlgArg::Rs256 => KeyAlg::Rs256,
            AlgArg::Eddsa => KeyAlg::EdDsa,
        }
    }
}

/// Where the keys are.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArg {
    /// Keys directory.
    #[arg(long, env = "CHARTER_KEYS_DIR", default_value = "keys")]
    pub dir: PathBuf,
}

/// Key generation options.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    #[arg(long, value_enum, default_value = "rs256")]
    pub alg: AlgArg,
    /// RSA modulus size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    pub bits: usize,
    #[command(flatten)]
    pub dir: DirArg,
}

/// A running issuer to act on instead of a keys directory.
#[derive(Debug, Clone, clap::Args)]
pub struct IssuerArgs {
    /// The issuer's base URL: rotate or list its key set (in its database,
    /// for every replica) instead of a keys directory.
    #[arg(long, env = "CHARTER_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// A service-account token with `keys:rotate` (role Admin) for `--issuer`.
    #[arg(long, env = "CHARTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a key (it signs if no key signs yet).
    Generate(GenArgs),
    /// List the keys and which one signs (with --issuer: the issuer's key set and states).
    List {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// With --issuer: publish a new key that signs after the prepublication
    /// window, on every replica. Without: generate a key in the directory
    /// and make it its signing key (offline signing).
    Rotate {
        #[command(flatten)]
        gen_args: GenArgs,
        #[command(flatten)]
        issuer: IssuerArgs,
        /// With --issuer, for a compromised key: the new key signs at once
        /// and the current one is retired at once (its tokens are refused).
        #[arg(long, requires = "issuer")]
        immediate: bool,
    },
    /// Retire a key: it no longer verifies nor is published.
    Retire {
        kid: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Print the JWKS of the public keys.
    Jwks(DirArg),
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate(a) => {
            let info = keys::generate(&a.dir.dir, a.alg.into(), a.bits, false)?;
            println!(
                "generated {} key {} at {}{}",
                info.alg,
                info.kid,
                info.path.display(),
                if info.signing { " (signing)" } else { "" }
            );
        }
        KeysCommand::Rotate {
            issuer:
                IssuerArgs {
                    issuer: Some(url),
                    token,
                },
            immediate,
            ..
        } => {
            let path = format!(
                "/api/keys/rotate{}",
                if immediate { "?immediate=true" } else { "" }
            );
            let answer = call_issuer(&url, token.as_deref(), reqwest::Method::POST, &path)?;
            println!("{}", answer["message"].as_str().unwrap_or("rotated"));
        }
        KeysCommand::List {
            issuer:
                IssuerArgs {
                    issuer: Some(url),
                    token,
                },
            ..
        } => {
            let answer = call_issuer(&url, token.as_deref(), reqwest::Method::GET, "/api/keys")?;
            for k in answer.as_array().into_iter().flatten() {
                let field = |f: &str| k[f].as_str().unwrap_or("-").to_string();
                println!(
                    "{}\t{}\t{}\tsigns from {}",
                    field("kid"),
                    field("alg"),
                    field("state"),
                    field("signs_from")
                );
            }
        }
        KeysCommand::Rotate { gen_args: a, .. } => {
            let before = keys::list(&a.dir.dir)?;
            let info = keys::generate(&a.dir.dir, a.alg.into(), a.bits, true)?;
            if let Some(old) = before.iter().find(|k| k.signing) {
                println!(
                    "{} no longer signs; it stays published until retired",
                    old.kid
                );
            }
            println!(
                "{} key {} now signs ({})",
                info.alg,
                info.kid,
                info.path.display()
            );
            println!(
                "This changed the keys directory only (for `charter token sign`). A running issuer keeps its key set in its database and reads this directory only on its first start: rotate it with `charter keys rotate --issuer URL`."
            );
        }
        KeysCommand::List { dir: d, .. } => {
            let list = keys::list(&d.dir)?;
            if list.is_empty() {
                println!("no keys in {}", d.dir.display());
            }
            for k in list {
                println!(
                    "{}\t{}\t{}\t{}",
                    k.kid,
                    k.alg,
                    if k.signing { "signing" } else { "verifying" },
                    k.path.display()
                );
            }
        }
        KeysCommand::Retire { kid, dir } => {
            keys::retire(&dir.dir, &kid)?;
            println!("retired {kid}");
        }
        KeysCommand::Jwks(d) => {
            let ring = Keyring::load(&d.dir)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&ring.jwks()).context("serialising JWKS")?
            );
        }
    }
    Ok(())
}

/// Calls the issuer's key API with a service-account token; its JSON answer,
/// or an error carrying its `message`.
fn call_issuer(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        anyhow::anyhow!("--issuer needs a service-account token: --token or CHARTER_TOKEN")
    })?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let res = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?
            .request(method, &url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = res.status();
        let body: serde_json::Value = res
            .json()
            .await
            .with_context(|| format!("{url} answered {status} without JSON"))?;
        if !status.is_success() {
            anyhow::bail!(
                "{url} answered {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    })
}
