//! The office's side of the protocol, behind the `gongkai` CLI: keys,
//! signing, verifying as a screen would, withdrawing, publishing with the
//! manifest, reading a screen's cache and the fleet's status; and the
//! office's intake of what screens send, with what staff do with it.
//!
//! One concept a file: `sign` and `broker` (notices out, statuses in);
//! `config` (office.toml); `intake` (the HTTP handlers) over `http` (the
//! accept loop), `body` (reading bodies under limits), `input` (pure checks)
//! and `database` (the thread that owns the office's SQLite); `staff`
//! (tokens, listing and export, reply deadlines) and `reply` (reply notices);
//! `console`, the web console mounted beside the intake.

pub mod body;
pub mod broker;
pub mod command;
pub mod config;
pub mod console;
mod database;
pub mod http;
pub mod input;
pub mod intake;
pub mod reply;
pub mod sign;
pub mod staff;

pub use broker::{fleet_status, publish};
pub use config::ServerConfig;
pub use sign::{keygen, sign_file, withdraw};
