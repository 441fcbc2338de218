//! DSSE envelopes (PROTOCOL.md section 2): parsing, the pre-authentication
//! encoding, signing and adding signatures.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::keys::{SecretKey, decode_base64};
use super::rejection::Rejection;

pub const NOTICE_TYPE: &str = "application/vnd.gongkai.notice+json";
pub const MANIFEST_TYPE: &str = "application/vnd.gongkai.manifest+json";
/// **[1.1]** One page of a paged manifest (section 3.6).
pub const MANIFEST_PAGE_TYPE: &str = "application/vnd.gongkai.manifest-page+json";
pub const COMMAND_TYPE: &str = "application/vnd.gongkai.command+json";

/// The whole envelope, as published, may be at most 256 KiB.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
pub const MAX_SIGNATURES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + body.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

impl Envelope {
    /// Parses envelope bytes. Size, JSON shape and signature count are checked
    /// here; the payload and signatures are checked by `verify`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Rejection> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(Rejection::TooLarge {
                bytes: bytes.len(),
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| Rejection::EnvelopeNotJson(e.to_string()))?;
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(Rejection::TooManySignatures(envelope.signatures.len()));
        }
        Ok(envelope)
    }

    /// A new envelope over `payload`, signed once by `key`.
    pub fn sign_new(payload_type: &str, payload: &[u8], key: &SecretKey) -> Self {
        let mut envelope = Envelope {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: Vec::new(),
        };
        envelope.add_signature(payload, key);
        envelope
    }

    /// Adds `key`'s signature over the given (already decoded) payload bytes.
    /// A signature by the same key is replaced rather than duplicated.
    pub fn add_signature(&mut self, payload: &[u8], key: &SecretKey) {
        let keyid = key.public().key_id().0.clone();
        let sig = STANDARD.encode(key.sign(&pae(&self.payload_type, payload)));
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(Signature { keyid, sig });
    }

    pub fn payload_bytes(&self) -> Result<Vec<u8>, Rejection> {
        decode_base64(&self.payload).ok_or(Rejection::PayloadNotBase64)
    }

    /// The canonical bytes a sender publishes (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn every_base64_alphabet_is_accepted() {
        let bytes = [0xfbu8, 0xff, 0xfe, 0x01];
        for text in ["+//+AQ==", "+//+AQ", "-__-AQ==", "-__-AQ"] {
            assert_eq!(decode_base64(text).as_deref(), Some(&bytes[..]), "{text}");
        }
        assert_eq!(decode_base64("%%%"), None);
    }

    #[test]
    fn signing_twice_with_one_key_keeps_one_signature() {
        let key = SecretKey::from_seed([7; 32]);
        let mut envelope = Envelope::sign_new(NOTICE_TYPE, b"{}", &key);
        envelope.add_signature(b"{}", &key);
        assert_eq!(envelope.signatures.len(), 1);
    }
}
