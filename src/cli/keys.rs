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

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a key (it signs if no key signs yet).
    Generate(GenArgs),
    /// List the keys and which one signs.
    List(DirArg),
    /// Generate a key and make it the signing key; older keys stay published.
    Rotate(GenArgs),
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
        KeysCommand::Rotate(a) => {
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
        }
        KeysCommand::List(d) => {
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
