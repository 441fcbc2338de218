//! A screen's verdict on one message: envelope, payload type for the topic,
//! payload rules, topic and community match, and the approval policy of
//! section 3.4 (office **and** supervisor unless the screen relaxes it).
//! Manifests and their pages need an office **or** operator signature, and a
//! reset the office's and the supervisor's (section 3.6). Which page hash an
//! index lists is state, so matching a page to its index is the store's.

use super::envelope::{self, Envelope, MANIFEST_PAGE_TYPE, MANIFEST_TYPE, NOTICE_TYPE};
use super::keys::{self, KeyId, PublicKey, Role};
use super::manifest::{Manifest, ManifestPage};
use super::notice::{Category, Notice, Priority};
use super::rejection::Rejection;
use super::topic::{Topic, TopicSpace};

/// The keys a screen trusts, by role, and where it relaxes dual signing.
/// Roles come from the screen's configuration, never from the message.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub office: Vec<PublicKey>,
    pub supervisor: Vec<PublicKey>,
    /// **[1.1]** Keys that may sign manifests (and commands), never notices.
    pub operator: Vec<PublicKey>,
    /// Accept `priority: urgent` notices with an office signature alone.
    pub urgent_office_only: bool,
    /// Categories accepted with an office signature alone.
    pub office_only_categories: Vec<Category>,
}

impl TrustPolicy {
    fn keys(&self, role: Role) -> &[PublicKey] {
        match role {
            Role::Office => &self.office,
            Role::Supervisor => &self.supervisor,
            Role::Operator => &self.operator,
        }
    }

    /// The roles whose signatures this notice needs under this policy.
    pub fn required_roles(&self, notice: &Notice) -> &'static [Role] {
        let relaxed = (self.urgent_office_only && notice.priority == Priority::Urgent)
            || self.office_only_categories.contains(&notice.category);
        if relaxed {
            &[Role::Office]
        } else {
            &[Role::Office, Role::Supervisor]
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifiedNotice {
    pub notice: Notice,
    pub payload_sha256: String,
    pub envelope_sha256: String,
}

#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    pub envelope_sha256: String,
}

#[derive(Debug, Clone)]
pub struct VerifiedPage {
    pub page: ManifestPage,
    pub envelope_sha256: String,
}

#[derive(Debug, Clone)]
pub enum Verified {
    Notice(Box<VerifiedNotice>),
    Manifest(VerifiedManifest),
    /// Signed and well formed; whether the held index lists it is the store's
    /// to decide.
    ManifestPage(VerifiedPage),
}

/// Whether `envelope` carries a valid signature over `payload` by one of
/// `keys`. Unknown keys and undecodable signatures are ignored; a keyid only
/// narrows which keys are tried.
pub fn signed_by_any(envelope: &Envelope, payload: &[u8], keys: &[PublicKey]) -> bool {
    let message = envelope::pae(&envelope.payload_type, payload);
    envelope.signatures.iter().any(|s| {
        let Some(sig) = keys::decode_base64(&s.sig) else {
            return false;
        };
        keys.iter()
            .filter(|k| s.keyid.is_empty() || k.key_id() == &KeyId(s.keyid.to_ascii_lowercase()))
            .any(|k| k.verify(&message, &sig))
    })
}

/// The roles for which `envelope` carries at least one valid signature over
/// `payload`. A role is a set member, so two signatures by one key count once.
pub fn signed_roles(envelope: &Envelope, payload: &[u8], policy: &TrustPolicy) -> Vec<Role> {
    [Role::Office, Role::Supervisor, Role::Operator]
        .into_iter()
        .filter(|role| signed_by_any(envelope, payload, policy.keys(*role)))
        .collect()
}

/// The verdict on `bytes` arriving on `topic` for a screen of `space`.
/// Only notice and manifest topics carry content; anything else is rejected.
pub fn verify_message(
    space: &TopicSpace,
    topic: &str,
    bytes: &[u8],
    policy: &TrustPolicy,
) -> Result<Verified, Rejection> {
    let parsed_topic = space.parse(topic);
    let expected_type = match &parsed_topic {
        Some(Topic::Notice(_)) => NOTICE_TYPE,
        Some(Topic::Manifest) => MANIFEST_TYPE,
        Some(Topic::ManifestPage(_)) => MANIFEST_PAGE_TYPE,
        _ => {
            return Err(Rejection::UnexpectedTopic {
                topic: topic.to_owned(),
                community: space.community.clone(),
            });
        }
    };
    let envelope = Envelope::parse(bytes)?;
    if envelope.payload_type != expected_type {
        return Err(Rejection::WrongPayloadType {
            expected: expected_type,
            got: envelope.payload_type,
        });
    }
    let payload = envelope.payload_bytes()?;
    let envelope_sha256 = super::sha256_hex(bytes);
    let check_community = |community: &str| {
        if community == space.community {
            Ok(())
        } else {
            Err(Rejection::WrongCommunity {
                expected: space.community.clone(),
                payload: community.to_owned(),
            })
        }
    };
    let signed = signed_roles(&envelope, &payload, policy);
    let require = |roles: &[Role]| match roles.iter().find(|r| !signed.contains(r)) {
        Some(role) => Err(Rejection::MissingSignature(*role)),
        None => Ok(()),
    };
    // An index, a page: an office or an operator signature.
    let require_publisher = || {
        if signed.contains(&Role::Office) || signed.contains(&Role::Operator) {
            Ok(())
        } else {
            Err(Rejection::MissingSignature(Role::Office))
        }
    };
    match parsed_topic {
        Some(Topic::Notice(topic_id)) => {
            let mut notice = Notice::from_payload(&payload)?;
            if notice.id != topic_id {
                return Err(Rejection::IdMismatch {
                    topic: topic_id,
                    payload: notice.id,
                });
            }
            check_community(&notice.community)?;
            require(policy.required_roles(&notice))?;
            notice.review_verified = signed.contains(&Role::Supervisor);
            Ok(Verified::Notice(Box::new(VerifiedNotice {
                payload_sha256: super::sha256_hex(&payload),
                envelope_sha256,
                notice,
            })))
        }
        Some(Topic::ManifestPage(topic_page)) => {
            let page = ManifestPage::from_payload(&payload)?;
            if page.page != topic_page {
                return Err(Rejection::invalid(format!(
                    "page {} arrived on the topic of page {topic_page}",
                    page.page
                )));
            }
            check_community(&page.community)?;
            require_publisher()?;
            Ok(Verified::ManifestPage(VerifiedPage {
                page,
                envelope_sha256,
            }))
        }
        _ => {
            let manifest = Manifest::from_payload(&payload)?;
            check_community(&manifest.community)?;
            if manifest.reset {
                // A reset overrides the version order: people sign it, the
                // office and the supervisory committee, never automation.
                require(&[Role::Office, Role::Supervisor])?;
            } else {
                require_publisher()?;
            }
            Ok(Verified::Manifest(VerifiedManifest {
                manifest,
                envelope_sha256,
            }))
        }
    }
}
