//! `charter-client`: what a vendor's product embeds to verify, keep and renew
//! its license token and to serve the licensing endpoints.

pub use charter_token as token;
