//! The integration tests: one binary, so that the crate, Slint, rustls and
//! SQLite are linked once, not once per file. Each module is one area; they
//! share the helpers of `common` (brokers, keys, signed notices, screens,
//! office servers, waiting with a deadline, tools a test needs).
//!
//! Tests that need a tool from outside Rust (Mosquitto, Xvfb, xdotool)
//! print `SKIPPED <test>: <tool>` and pass where the tool is missing, unless
//! `GONGKAI_REQUIRE_ALL=1` (as in CI), where a missing tool fails them.

mod common;

mod acl;
mod cli;
mod cluster;
mod commands;
mod console;
mod faults;
mod feedback;
mod hostile;
mod kiosk;
mod media;
mod office;
mod office_cli;
mod package;
mod plays;
mod public;
mod render;
mod scopes;
mod screen;
mod tidy;
mod tls;
mod vectors;
mod window;
