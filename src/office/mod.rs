//! The office's side of the protocol, behind the `gongkai` CLI: keys,
//! signing, verifying as a screen would, withdrawing, publishing with the
//! manifest, reading a screen's cache and the fleet's status.

pub mod body;
pub mod broker;
pub mod http;
pub mod input;
pub mod intake;
pub mod sign;

pub use broker::{fleet_status, publish};
pub use sign::{keygen, sign_file, withdraw};
