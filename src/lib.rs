//! Charter issuer: the library behind the `charter` binary, exported so that
//! integration tests can build the router in-process.

pub mod cli;
pub mod instance;
pub mod serve;
