//! Why a screen refused a message, in words an office clerk can act on.

use super::keys::Role;

/// The reason a message was not accepted. `Display` is what goes into logs,
/// the store's rejection table and the screen's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("envelope too large: {bytes} bytes, the limit is {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("topic {topic} is not a notice or manifest topic of community {community}")]
    UnexpectedTopic { topic: String, community: String },
    #[error("topic {topic} is in scope {scope:?}, which this screen does not follow")]
    UnfollowedScope { topic: String, scope: String },
    #[error(
        "page {page} of manifest version {version} does not match the index: its sha256 {got} is not the listed {listed}"
    )]
    PageNotIndexed {
        page: u32,
        version: u64,
        got: String,
        listed: String,
    },
    #[error("envelope is not valid JSON: {0}")]
    EnvelopeNotJson(String),
    #[error("envelope carries {0} signatures, at most 64 are allowed")]
    TooManySignatures(usize),
    #[error("payload type {got:?} is not the expected {expected:?} for this topic")]
    WrongPayloadType { expected: &'static str, got: String },
    #[error("payload is not valid base64")]
    PayloadNotBase64,
    #[error("payload is not valid UTF-8 JSON: {0}")]
    PayloadNotJson(String),
    #[error("unsupported schema {0}: this screen understands schema 1")]
    UnsupportedSchema(u64),
    #[error("invalid payload: {0}")]
    Invalid(String),
    #[error("payload id {payload:?} does not match the topic's id {topic:?}")]
    IdMismatch { topic: String, payload: String },
    #[error("payload community {payload:?} does not match {expected:?}")]
    WrongCommunity { expected: String, payload: String },
    #[error("missing {0} signature: no valid signature by a trusted {0} key")]
    MissingSignature(Role),
    #[error("equivocation: version {version} of {id} was already accepted with other content")]
    Equivocation { id: String, version: u64 },
}

impl Rejection {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Rejection::Invalid(msg.into())
    }
}
