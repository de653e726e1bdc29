//! `charter instance`: the client crate's endpoints standalone. (To be built.)

/// Flags of `charter instance`.
#[derive(Debug, clap::Args)]
pub struct InstanceArgs {}

pub fn run(_args: InstanceArgs) -> anyhow::Result<()> {
    anyhow::bail!("charter instance is not built yet")
}
