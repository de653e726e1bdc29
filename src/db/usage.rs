//! Usage history: the reports instances send with their renewals, one row
//! each, written in the renewal's transaction ([`super::Store::record_issuance`])
//! and read per license and time range.

use async_trait::async_trait;

use super::Result;
use super::rows::Cells;
use crate::domain::UsageReport;

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// The reports of license `lid` with `from <= at < to`, oldest first.
    async fn usage_reports(&self, lid: &str, from: i64, to: i64) -> Result<Vec<UsageReport>>;
}

/// ?1 lid, ?2 instance, ?3 at, ?4 counters.
pub(crate) const INSERT: &str =
    "INSERT INTO usage_reports (lid, instance_id, at, counters) VALUES (?1, ?2, ?3, ?4)";

/// ?1 lid, ?2 from, ?3 to (served by `usage_reports_license`).
pub(crate) const RANGE: &str = "SELECT instance_id, at, counters FROM usage_reports \
     WHERE lid = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, id";

pub(crate) fn report(r: &impl Cells) -> Result<UsageReport> {
    Ok(UsageReport {
        instance_id: r.text(0)?,
        at: r.int(1)?,
        counters: r.json(2)?,
    })
}
