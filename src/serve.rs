//! `charter serve` and `charter migrate`. (Issuer core: to be built.)

/// Flags of `charter serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Flags of `charter migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("charter serve is not built yet")
}

pub fn migrate(_args: MigrateArgs) -> anyhow::Result<()> {
    anyhow::bail!("charter migrate is not built yet")
}
