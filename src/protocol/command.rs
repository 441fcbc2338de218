//! Commands from the office to screens (PROTOCOL.md section 5, with the
//! exact rules of 1.1): the payload, and a screen's verdict on one. Pure:
//! `now` is a parameter, and whether an id was executed before is the
//! caller's to say (the screen keeps executed ids durably).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::envelope::{COMMAND_TYPE, Envelope};
use super::keys::{PublicKey, Role};
use super::rejection::Rejection;
use super::topic::{Topic, TopicSpace};

/// How far ahead of the screen's clock `issued_at` may be.
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
/// The longest a command may stay valid.
pub const MAX_VALIDITY: time::Duration = time::Duration::hours(24);

/// What a command asks a screen to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Render the frame residents see and upload it.
    Screenshot,
    /// Drop the retained-notice subscription and subscribe again.
    Resync,
    /// Show the screen id and network state for 30 s.
    Identify,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "screenshot" => Some(Action::Screenshot),
            "resync" => Some(Action::Resync),
            "identify" => Some(Action::Identify),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Screenshot => "screenshot",
            Action::Resync => "resync",
            Action::Identify => "identify",
        }
    }
}

/// A command's payload as signed (section 5).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    #[serde(default = "schema_1")]
    pub schema: u64,
    pub id: String,
    pub community: String,
    #[serde(default)]
    pub screens: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub action: String,
}

fn schema_1() -> u64 {
    1
}

/// A command that passed every rule but the once-only one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: String,
    pub action: Action,
    pub issued_at: OffsetDateTime,
    /// The screen keeps the id as executed until then.
    pub expires_at: OffsetDateTime,
}

/// The keys whose signature makes a command: an `office` or an `operator`
/// key of the home community. A supervisor signature is neither needed nor
/// enough.
#[derive(Debug, Clone, Default)]
pub struct CommandKeys {
    pub office: Vec<PublicKey>,
    pub operator: Vec<PublicKey>,
}

/// `^[A-Za-z0-9-]{1,64}$`.
fn is_command_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The verdict of screen `screen` of `space` on `bytes` arriving on `topic`
/// at `now`.
pub fn verify_command(
    space: &TopicSpace,
    screen: &str,
    topic: &str,
    bytes: &[u8],
    keys: &CommandKeys,
    now: OffsetDateTime,
) -> Result<Command, Rejection> {
    let per_screen = match space.parse(topic) {
        Some(Topic::ScreenCommand(id)) if id == screen => true,
        Some(Topic::Command) => false,
        _ => {
            return Err(Rejection::UnexpectedTopic {
                topic: topic.to_owned(),
                community: space.community.clone(),
            });
        }
    };
    let envelope = Envelope::parse(bytes)?;
    if envelope.payload_type != COMMAND_TYPE {
        return Err(Rejection::WrongPayloadType {
            expected: COMMAND_TYPE,
            got: envelope.payload_type,
        });
    }
    let payload = envelope.payload_bytes()?;
    let signers: Vec<PublicKey> = keys.office.iter().chain(&keys.operator).cloned().collect();
    if !super::verify::signed_by_any(&envelope, &payload, &signers) {
        return Err(Rejection::MissingSignature(Role::Office));
    }
    let p: Payload = super::notice::parse_payload(&payload)?;
    if p.community != space.community {
        return Err(Rejection::WrongCommunity {
            expected: space.community.clone(),
            payload: p.community,
        });
    }
    if !is_command_id(&p.id) {
        return Err(Rejection::invalid(format!(
            "command id {:?} must be 1 to 64 letters, digits or hyphens",
            p.id
        )));
    }
    let addressed = p.screens.iter().any(|s| s == screen);
    if !(addressed || !per_screen && p.screens.is_empty()) {
        return Err(Rejection::invalid(format!(
            "command {} is not addressed to screen {screen}",
            p.id
        )));
    }
    if p.issued_at > now + MAX_CLOCK_SKEW {
        return Err(Rejection::invalid(format!(
            "command {}: issued_at is more than 5 minutes ahead of this screen's clock",
            p.id
        )));
    }
    if p.expires_at <= now {
        return Err(Rejection::invalid(format!("command {} has expired", p.id)));
    }
    if p.expires_at - p.issued_at > MAX_VALIDITY {
        return Err(Rejection::invalid(format!(
            "command {} is valid for more than 24 hours",
            p.id
        )));
    }
    let action = Action::parse(&p.action).ok_or_else(|| {
        Rejection::invalid(format!("command {}: unknown action {:?}", p.id, p.action))
    })?;
    Ok(Command {
        id: p.id,
        action,
        issued_at: p.issued_at,
        expires_at: p.expires_at,
    })
}
