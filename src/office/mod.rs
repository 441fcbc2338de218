//! The office's side of the protocol, behind the `gongkai` CLI: keys,
//! signing, verifying as a screen would, withdrawing, publishing with the
//! manifest, reading a screen's cache and the fleet's status; and the
//! office's intake of what screens send, with what staff do with it.
//!
//! One concept a file: `sign` and `broker` (notices out, statuses in);
//! `config` (office.toml); `intake` (the HTTP handlers) over `http` (the
//! accept loop, plain or TLS), `certificate` (the server's TLS identity),
//! `body` (reading bodies under limits), `input` (pure checks) and
//! `database` (the thread that owns the office's SQLite); `follow` (the
//! scopes the office follows on its broker, with their keys) and `public`
//! (the public pages built from what that follow accepted); `staff`
//! (tokens, listing and export, reply deadlines), `reply` (reply notices),
//! `plays` (what the proof-of-play chains say, and whether they are whole);
//! `watch` (the server's standing view of its screens' statuses); `console`,
//! the web console mounted beside the intake.

pub mod body;
pub mod broker;
pub mod certificate;
pub mod command;
pub mod config;
pub mod console;
mod database;
pub mod follow;
pub mod http;
pub mod input;
pub mod intake;
pub mod plays;
pub mod public;
pub mod reply;
pub mod sign;
pub mod staff;
pub mod watch;

pub use broker::{fleet_status, publish};
pub use config::ServerConfig;
pub use sign::{keygen, sign_file, withdraw};
