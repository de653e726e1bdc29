//! The issuer's domain: products, accounts, licenses, instances and tokens,
//! and the rules that turn a license into claims. Plain types and functions,
//! testable without a server or a database.

mod access;
pub mod events;
mod keys;
mod license;
mod page;
mod types;
pub mod usage;
mod values;

pub use access::*;
pub use events::{Delivery, DeliveryState, Event, NewEvent, Webhook};
pub use keys::*;

pub use license::{RenewRefusal, check_renewable, claims_for, license_state};
pub use page::*;
pub use types::*;
pub use usage::UsageReport;
pub use values::*;
