//! The wire protocol (PROTOCOL.md sections 2, 3 and 3.6): signed DSSE envelopes,
//! notice and manifest payloads, topics, and the screen's verdict on a message.
//!
//! Everything here is pure: no I/O, no clock (callers pass `now` where it
//! matters), no global state. The MQTT task and the CLI both call into it, so
//! a screen and the office always agree on what is valid.

pub mod envelope;
pub mod feedback;
pub mod keys;
pub mod manifest;
pub mod notice;
pub mod ordering;
pub mod personal_data;
pub mod rejection;
pub mod topic;
pub mod verify;

pub use envelope::{Envelope, MANIFEST_TYPE, MAX_ENVELOPE_BYTES, NOTICE_TYPE};
pub use keys::{KeyId, PublicKey, SecretKey};
pub use manifest::{Manifest, ManifestEntry};
pub use notice::{Category, Notice, Priority, Status};
pub use rejection::Rejection;
pub use topic::{Topic, TopicSpace};
pub use verify::{Role, TrustPolicy, Verified, VerifiedManifest, VerifiedNotice, verify_message};

/// Lowercase hex SHA-256 of some bytes: key ids, envelope and payload hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`: community, notice and screen ids.
pub fn is_valid_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
