//! Offline subcommands: keys and tokens.

pub mod keys;
pub mod token;
