//! `charter token sign|inspect|verify`: offline issuance and checks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use charter_token::rules::{self, InstanceUrl};
use charter_token::{Claims, DAY, KeySet, Keyring, VerifyError};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Sign claims from a JSON file (offline issuance for air-gapped customers).
    ///
    /// Fills `jti`, `iat`, `nbf` and `exp` when absent or zero.
    Sign {
        /// JSON file with the claims, or `-` for standard input.
        #[arg(long)]
        claims: PathBuf,
        #[arg(long, env = "CHARTER_KEYS_DIR", default_value = "keys")]
        keys: PathBuf,
        /// Token lifetime when `exp` is absent (capped by `lexp`).
        #[arg(long, default_value_t = 30)]
        ttl_days: i64,
    },
    /// Show header, claims and time states, without verifying.
    Inspect {
        /// Token file, or `-` (default) for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Verify a token; exit 0 only if it is valid.
    #[command(group(clap::ArgGroup::new("trusted").required(true).args(["keys", "jwks"])))]
    Verify {
        /// Token file, or `-` (default) for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Verify against the public halves of the keys in this directory.
        #[arg(long, conflicts_with = "jwks")]
        keys: Option<PathBuf>,
        /// Verify against a JWKS file or an http(s) URL serving one.
        #[arg(long)]
        jwks: Option<String>,
        /// Also require that the token's `sub` names this instance.
        #[arg(long)]
        instance: Option<String>,
    },
}

pub fn run(cmd: TokenCommand) -> ExitCode {
    let result = match cmd {
        TokenCommand::Sign {
            claims,
            keys,
            ttl_days,
        } => sign(&claims, &keys, ttl_days),
        TokenCommand::Inspect { file } => inspect(&file),
        TokenCommand::Verify {
            file,
            keys,
            jwks,
            instance,
        } => match verify(&file, keys.as_deref(), jwks.as_deref(), instance.as_deref()) {
            Ok(line) => {
                println!("{line}");
                Ok(())
            }
            Err(e) => {
                println!("invalid: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    let mut s = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(1 << 20)
            .read_to_string(&mut s)
            .context("reading standard input")?;
    } else {
        s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(s)
}

/// Fills the claims a signer may leave out: `jti`, `iat`, `nbf`, `exp`.
pub fn fill_defaults(claims: &mut Claims, now: i64, ttl_days: i64) {
    if claims.jti.is_empty() {
        claims.jti = uuid::Uuid::new_v4().to_string();
    }
    if claims.iat == 0 {
        claims.iat = now;
    }
    if claims.nbf == 0 {
        claims.nbf = claims.iat;
    }
    if claims.exp == 0 {
        let ttl_end = claims.iat.saturating_add(ttl_days.saturating_mul(DAY));
        claims.exp = if claims.lexp > 0 {
            ttl_end.min(claims.lexp)
        } else {
            ttl_end
        };
    }
}

fn sign(claims_path: &Path, keys: &Path, ttl_days: i64) -> anyhow::Result<()> {
    let text = read_input(claims_path)?;
    let mut claims: Claims = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a claims object", claims_path.display()))?;
    fill_defaults(&mut claims, rules::now(), ttl_days);
    let ring = Keyring::load(keys)?;
    println!("{}", ring.sign(&claims)?);
    Ok(())
}

fn fmt_time(t: i64) -> String {
    if t == 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "out of range".into())
}

fn inspect(file: &Path) -> anyhow::Result<()> {
    let token = read_input(file)?;
    let (header, claims) = charter_token::insecure_decode(token.trim())?;
    let now = rules::now();
    println!("header: {header}");
    let mut value = serde_json::to_value(&claims)?;
    if let Some(obj) = value.as_object_mut() {
        for k in ["iat", "nbf", "exp", "lexp", "trial_exp"] {
            if let Some(t) = obj.get(k).and_then(|v| v.as_i64()) {
                obj.insert(k.to_string(), format!("{t} ({})", fmt_time(t)).into());
            }
        }
    }
    println!("claims: {}", serde_json::to_string_pretty(&value)?);
    let state = if now < claims.nbf {
        "not yet valid"
    } else if now >= claims.exp {
        "expired"
    } else {
        "valid (signature not checked)"
    };
    println!("state: {state}");
    println!(
        "renewal due: {} (at {})",
        rules::is_due_for_renewal(&claims, now),
        fmt_time(rules::renewal_due_at(&claims))
    );
    println!(
        "token expiry warning: {}",
        rules::token_warning(&claims, now)
    );
    println!(
        "license expiry warning: {}",
        rules::license_warning(&claims, now)
    );
    Ok(())
}

fn load_jwks(source: &str) -> anyhow::Result<KeySet> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let resp = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?
                .get(source)
                .send()
                .await?
                .error_for_status()?;
            resp.text().await
        })
        .with_context(|| format!("fetching {source}"))?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?
    };
    let set = KeySet::from_jwks_json(&text).context("not a JWKS document")?;
    if set.is_empty() {
        bail!("the JWKS holds no RS256 or EdDSA key");
    }
    Ok(set)
}

fn verify(
    file: &Path,
    keys: Option<&Path>,
    jwks: Option<&str>,
    instance: Option<&str>,
) -> anyhow::Result<String> {
    let token = read_input(file)?;
    let set = match (keys, jwks) {
        (Some(dir), _) => Keyring::load(dir)?.public().clone(),
        (None, Some(src)) => load_jwks(src)?,
        (None, None) => bail!("give --keys or --jwks"),
    };
    let claims = set
        .verify(token.trim(), rules::now())
        .map_err(|e| match e {
            VerifyError::Expired(c) => anyhow::anyhow!("token expired at {}", fmt_time(c.exp)),
            e => e.into(),
        })?;
    if let Some(url) = instance {
        let url = InstanceUrl::parse(url).context("--instance")?;
        if !rules::subject_matches(&claims.sub, &url) {
            bail!("token is for {:?}, not {url}", claims.sub);
        }
    }
    Ok(format!(
        "valid: lid={} sub={} exp={}",
        claims.lid,
        claims.sub,
        fmt_time(claims.exp)
    ))
}
