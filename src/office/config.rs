//! office.toml, the configuration of the office's intake server and staff
//! commands: where the server listens, the office's database, and the
//! server's limits, and the calendar its reply deadlines are counted in.
//!
//! Not the screen's configuration: a screen's link to the office's API is
//! `config::OfficeApi`, its `[office]` section. Unknown keys are errors, so
//! that a mistyped key is not silently left at its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::workdays::Calendar;

use super::http::Limits;

/// office.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the intake server listens, e.g. "127.0.0.1:8080".
    pub listen: SocketAddr,
    /// The office's SQLite file.
    pub database: PathBuf,
    /// Timeouts and the connection cap; defaults when left out.
    #[serde(default)]
    pub limits: Limits,
    /// A holiday calendar of the office's own, in the format of
    /// `config/holidays/cn.toml`, replacing the national one built in.
    #[serde(default)]
    pub holidays: Option<PathBuf>,
    /// The calendar of working days: the file named by `holidays`, or the
    /// national one.
    #[serde(skip)]
    pub calendar: Calendar,
    /// The MQTT broker the office publishes to, e.g. "mqtts://broker:8883".
    #[serde(default)]
    pub broker: Option<String>,
    /// The office's public address (the base of QR links and image URLs),
    /// e.g. "https://office.example"; `http://{listen}` when left out.
    #[serde(default)]
    pub public_url: Option<String>,
    /// One `[[scope]]` per scope the office publishes to.
    #[serde(default, rename = "scope")]
    pub scopes: Vec<ScopeConfig>,
}

/// A `[[scope]]` of office.toml: a scope the office publishes to, with keys
/// trusted there besides the people enrolled in the console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    pub id: String,
    #[serde(default)]
    pub office: Vec<String>,
    #[serde(default)]
    pub supervisor: Vec<String>,
}

impl ServerConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut config: ServerConfig =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let problems = config.limits.problems();
        anyhow::ensure!(
            problems.is_empty(),
            "{}: {}",
            path.display(),
            problems.join("; ")
        );
        if let Some(file) = &config.holidays {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "{}: cannot read the holidays file {}",
                    path.display(),
                    file.display()
                )
            })?;
            config.calendar = Calendar::from_toml(&text).map_err(|problems| {
                anyhow::anyhow!(
                    "{}: holidays file {}: {problems}",
                    path.display(),
                    file.display()
                )
            })?;
        }
        Ok(config)
    }
}
