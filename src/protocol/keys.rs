//! Ed25519 keys as the protocol writes them: public keys as standard base64 of
//! the 32 raw bytes, secret keys as the base64 32-byte seed, key ids as the hex
//! SHA-256 of the public key.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fmt;

/// The role a screen's configuration gives a key (section 1). Roles never
/// come from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Office,
    Supervisor,
    /// **[1.1]** An office server's automation key: signs manifests and
    /// commands, never counts for a notice.
    Operator,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Office => "office",
            Role::Supervisor => "supervisor",
            Role::Operator => "operator",
        })
    }
}

/// Decodes base64 in any of the alphabets DSSE receivers must accept:
/// standard or URL-safe, with or without padding.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// Lowercase hex SHA-256 of a raw public key (64 hex characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not valid base64")]
    Base64,
    #[error("expected 32 bytes, found {0}")]
    Length(usize),
    #[error("not a valid Ed25519 public key")]
    Point,
}

/// A trusted (or to-be-trusted) Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_base64(text.trim()).ok_or(KeyError::Base64)?;
        let raw: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::Point)?;
        Ok(Self::from_verifying(key))
    }

    fn from_verifying(key: VerifyingKey) -> Self {
        let id = KeyId(super::sha256_hex(key.as_bytes()));
        Self { key, id }
    }

    pub fn key_id(&self) -> &KeyId {
        &self.id
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    /// Strict verification: rejects small-order keys and non-canonical
    /// signatures, so one signature cannot be massaged into another valid one.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok()
    }
}

/// A signing key, held by the office or the supervisory committee.
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// Parses the key file format: the 32-byte seed as base64 on one line.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_base64(text.trim()).ok_or(KeyError::Base64)?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Self::from_seed(seed))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_verifying(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}
