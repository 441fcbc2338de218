//! Keys, signatures and withdrawals: everything the office does to files.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use time::OffsetDateTime;

use crate::protocol::envelope::{Envelope, MANIFEST_TYPE, NOTICE_TYPE};
use crate::protocol::notice::rfc3339;
use crate::protocol::personal_data;
use crate::protocol::{Manifest, Notice, PublicKey, SecretKey};

/// Writes a new key (the 32-byte seed as base64 on one line, mode 0600)
/// and returns its public half. Never overwrites a file.
pub fn keygen(out: &Path) -> anyhow::Result<PublicKey> {
    let key = SecretKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            out.display()
        )
    })?;
    writeln!(file, "{}", key.to_base64())?;
    file.sync_all()?;
    Ok(key.public())
}

pub fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    SecretKey::from_base64(&text).with_context(|| format!("key file {}", path.display()))
}

/// What `sign` did.
pub struct Signed {
    pub envelope: Envelope,
    pub signatures: usize,
}

/// Signs `input`: a notice (or manifest) payload becomes a new envelope; an
/// envelope gets one more signature with its payload untouched. Refuses
/// payloads that fail validation and, unless allowed, notices whose text
/// holds unmasked personal data.
pub fn sign_file(
    key_path: &Path,
    input: &Path,
    allow_personal_data: bool,
) -> anyhow::Result<Signed> {
    let key = read_key(key_path)?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", input.display()))?;
    let (mut envelope, payload) = if value.get("payloadType").is_some() {
        let envelope =
            Envelope::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
        let payload = envelope
            .payload_bytes()
            .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
        (Some(envelope), payload)
    } else {
        (None, bytes)
    };
    let payload_type = match &envelope {
        Some(e) => e.payload_type.clone(),
        None if value.get("notices").is_some() && value.get("title").is_none() => {
            MANIFEST_TYPE.to_owned()
        }
        None => NOTICE_TYPE.to_owned(),
    };
    match payload_type.as_str() {
        NOTICE_TYPE => {
            let notice =
                Notice::from_payload(&payload).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            let findings: Vec<_> = notice
                .texts()
                .into_iter()
                .flat_map(personal_data::scan)
                .collect();
            if !findings.is_empty() && !allow_personal_data {
                let list: Vec<String> = findings
                    .iter()
                    .map(|f| format!("  - {} ({})", f.kind.describe(), f.masked))
                    .collect();
                bail!(
                    "refused: the notice holds unmasked personal data:\n{}\nMask it (张*三, 138****1234) or pass --allow-personal-data if publishing it is lawful",
                    list.join("\n")
                );
            }
        }
        MANIFEST_TYPE => {
            Manifest::from_payload(&payload).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
        }
        other => bail!("refused: payload type {other:?} is not a notice or manifest"),
    }
    let envelope = match envelope.as_mut() {
        Some(e) => {
            e.add_signature(&payload, &key);
            e.clone()
        }
        None => Envelope::sign_new(&payload_type, &payload, &key),
    };
    Ok(Signed {
        signatures: envelope.signatures.len(),
        envelope,
    })
}

/// The withdrawal payload of a notice (an envelope or a payload): the next
/// version with `status: "withdrawn"`, everything else kept, to be signed
/// like any notice.
pub fn withdraw(input: &Path, now: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", input.display()))?;
    let payload = if value.get("payloadType").is_some() {
        let envelope = Envelope::parse(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        if envelope.payload_type != NOTICE_TYPE {
            bail!("{} is not a notice envelope", input.display());
        }
        envelope
            .payload_bytes()
            .map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        bytes
    };
    let notice = Notice::from_payload(&payload).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Edit the JSON rather than re-serialising the struct: fields this
    // version does not know survive the withdrawal.
    let mut value: serde_json::Value = serde_json::from_slice(&payload)?;
    value["version"] = (notice.version + 1).into();
    value["status"] = "withdrawn".into();
    value["issued_at"] = rfc3339(now).into();
    let out = serde_json::to_vec_pretty(&value)?;
    Notice::from_payload(&out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}
