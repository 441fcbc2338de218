//! The wire protocol (PROTOCOL.md sections 2, 3 and 3.6): signed DSSE envelopes,
//! notice and manifest payloads, topics, and the screen's verdict on a message.
//!
//! Everything here is pure: no I/O, no clock (callers pass `now` where it
//! matters), no global state. The MQTT task and the CLI both call into it, so
//! a screen and the office always agree on what is valid.

pub mod command;
pub mod envelope;
pub mod feedback;
pub mod keys;
pub mod manifest;
pub mod notice;
pub mod ordering;
pub mod personal_data;
pub mod plays;
pub mod rejection;
pub mod scope;
pub mod topic;
pub mod verify;

pub use envelope::{Envelope, MANIFEST_PAGE_TYPE, MANIFEST_TYPE, MAX_ENVELOPE_BYTES, NOTICE_TYPE};
pub use keys::{KeyId, PublicKey, Role, SecretKey};
pub use manifest::{Manifest, ManifestEntry, ManifestPage, PageRef};
pub use notice::{Category, Notice, Priority, Status};
pub use rejection::Rejection;
pub use scope::{Follows, Scope};
pub use topic::{Topic, TopicSpace};
pub use verify::{
    TrustPolicy, Verified, VerifiedManifest, VerifiedNotice, VerifiedPage, verify_message,
};

/// The highest notice or manifest version (section 3.2, 1.1): 2^53 − 1, so
/// that every JSON implementation reads a version exactly, and SQLite's
/// signed 64-bit integers hold it with room to spare.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// Checks a version against `1..=MAX_VERSION`; `what` names it in the reason.
pub fn check_version(what: &str, version: u64) -> Result<(), Rejection> {
    if version < 1 {
        return Err(Rejection::Invalid(format!("{what} must be at least 1")));
    }
    if version > MAX_VERSION {
        return Err(Rejection::Invalid(format!(
            "{what} {version} is above the limit of 2^53 - 1 ({MAX_VERSION})"
        )));
    }
    Ok(())
}

/// Lowercase hex SHA-256 of some bytes: key ids, envelope and payload hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Foreign text made safe for a terminal, a log line or a status field:
/// control characters (C0, DEL, C1) and the bidirectional overrides that can
/// reorder what a reader sees are written as `\u{..}` escapes. Text with
/// none of them is returned as it is, so escaping twice changes nothing.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_and_bidi_overrides_only() {
        assert_eq!(printable("公开 notice-1"), "公开 notice-1");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}[2Jb\u{7}c\r\nd"),
            "a\\u{1b}[2Jb\\u{7}c\\u{d}\\u{a}d"
        );
        assert_eq!(
            printable("x\u{9b}y\u{202e}z\u{7f}"),
            "x\\u{9b}y\\u{202e}z\\u{7f}"
        );
        let once = printable("\u{1b}]0;title\u{7}");
        assert_eq!(printable(&once), once, "escaping twice changes nothing");
    }

    #[test]
    fn versions_are_bounded_at_2_pow_53_minus_1() {
        assert!(check_version("version", 1).is_ok());
        assert!(check_version("version", MAX_VERSION).is_ok());
        for bad in [0, MAX_VERSION + 1, 1 << 63, u64::MAX] {
            let e = check_version("version", bad).unwrap_err().to_string();
            assert!(e.contains("version"), "{e}");
        }
    }
}
