//! Residents' feedback on the wire (PROTOCOL.md section 7): the batch a
//! screen posts to the office, its items, and the rules an item must keep.
//! Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};

use super::notice::is_receipt_code;

/// Items in one request at most.
pub const MAX_ITEMS: usize = 500;
/// Characters of an opinion or objection at most.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Preset reason codes on one item at most.
pub const MAX_REASONS: usize = 8;
/// Working days (工作日) within which the office answers an item, counted
/// from the day after it reached the office: what the kiosk promises, and
/// what `gongkai office feedback` flags as overdue (逾期未复) past it.
pub const REPLY_WORKING_DAYS: u32 = 10;

/// Days a resident's contact number is kept once their item was answered.
/// The office enforces it (its sweep wipes older numbers) and the kiosk's
/// privacy notice promises it (处理完毕后保存不超过 180 天): one constant, so
/// the promise cannot drift from what is done.
pub const CONTACT_RETENTION_DAYS: u16 = 180;

/// [`CONTACT_RETENTION_DAYS`] as a duration, for the office's sweep.
pub const CONTACT_KEPT_AFTER_REPLY: time::Duration =
    time::Duration::days(CONTACT_RETENTION_DAYS as i64);

/// `POST /api/v1/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackBatch {
    pub screen: String,
    pub community: String,
    pub items: Vec<FeedbackItem>,
}

/// One submission of a resident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackItem {
    /// A UUID (v7 from screens), the same on every retry.
    pub id: String,
    pub receipt: String,
    pub created_at: String,
    /// **[1.1]** The scope of an upper-scope notice (section 3.7); absent
    /// for the screen's home community.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_scope: Option<String>,
    #[serde(default)]
    pub notice_id: Option<String>,
    #[serde(default)]
    pub notice_version: Option<u64>,
    pub kind: String,
    #[serde(default)]
    pub rating: Option<u8>,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub text: String,
    /// A phone number the resident chose to leave, or "".
    #[serde(default)]
    pub contact: String,
}

/// The office's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackResponse {
    pub accepted: Vec<String>,
    pub rejected: Vec<ItemRejection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRejection {
    pub id: String,
    pub reason: String,
}

impl FeedbackItem {
    /// Why the office cannot take this item, if it cannot. The reason is
    /// permanent: sending the item again will not change it.
    pub fn problem(&self) -> Option<String> {
        if uuid::Uuid::parse_str(&self.id).is_err() {
            return Some(format!("id {:?} is not a UUID", self.id));
        }
        if !is_receipt_code(&self.receipt) {
            return Some(format!(
                "receipt {:?} is not 6 characters of Crockford base32",
                self.receipt
            ));
        }
        if time::OffsetDateTime::parse(
            &self.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .is_err()
        {
            return Some(format!("created_at {:?} is not RFC 3339", self.created_at));
        }
        match self.kind.as_str() {
            "rating" => match self.rating {
                Some(1..=3) => {}
                other => return Some(format!("a rating is 1, 2 or 3, not {other:?}")),
            },
            "opinion" => {}
            "objection" if self.notice_id.is_none() => {
                return Some("an objection names the notice it is about".into());
            }
            "objection" => {}
            other => {
                return Some(format!(
                    "kind {other:?} is not rating, opinion or objection"
                ));
            }
        }
        if self.kind != "rating" && self.rating.is_some() {
            return Some(format!("a {} carries no rating", self.kind));
        }
        if let Some(scope) = self
            .notice_scope
            .as_deref()
            .filter(|s| !super::is_valid_id(s))
        {
            return Some(format!("notice_scope {scope:?} is not a valid scope id"));
        }
        if self.notice_scope.is_some() && self.notice_id.is_none() {
            return Some("notice_scope names the scope of a notice_id".into());
        }
        if self.notice_id.is_some() != self.notice_version.is_some() {
            return Some("notice_id and notice_version go together".into());
        }
        if self.reasons.len() > MAX_REASONS
            || self
                .reasons
                .iter()
                .any(|r| r.is_empty() || r.len() > 32 || !r.bytes().all(is_code_byte))
        {
            return Some(format!(
                "reasons are at most {MAX_REASONS} codes of a-z, 0-9, - and _"
            ));
        }
        if self.text.chars().count() > MAX_TEXT_CHARS {
            return Some(format!("text is longer than {MAX_TEXT_CHARS} characters"));
        }
        if !self.contact.is_empty() && !is_mobile_number(&self.contact) {
            return Some("contact is not an 11-digit mobile number".into());
        }
        None
    }
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// A mainland mobile number: 11 digits starting with 1.
pub fn is_mobile_number(s: &str) -> bool {
    s.len() == 11 && s.starts_with('1') && s.bytes().all(|b| b.is_ascii_digit())
}

/// A contact number as staff see it by default: 138****1234.
pub fn mask_contact(s: &str) -> String {
    if is_mobile_number(s) {
        format!("{}****{}", &s[..3], &s[7..])
    } else if s.is_empty() {
        String::new()
    } else {
        "****".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> FeedbackItem {
        FeedbackItem {
            id: "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10".into(),
            receipt: "K7Q2MD".into(),
            created_at: "2026-10-08T10:00:00+08:00".into(),
            notice_scope: None,
            notice_id: Some("2026q3-finance-001".into()),
            notice_version: Some(3),
            kind: "rating".into(),
            rating: Some(3),
            reasons: vec!["clear".into()],
            text: String::new(),
            contact: String::new(),
        }
    }

    #[test]
    fn a_valid_item_has_no_problem() {
        assert_eq!(item().problem(), None);
        let opinion = FeedbackItem {
            kind: "opinion".into(),
            rating: None,
            notice_scope: None,
            notice_id: None,
            notice_version: None,
            text: "希望增加健身器材".into(),
            contact: "13812341234".into(),
            ..item()
        };
        assert_eq!(opinion.problem(), None);
    }

    #[test]
    fn each_rule_names_its_problem() {
        let cases = [
            (
                FeedbackItem {
                    id: "x".into(),
                    ..item()
                },
                "not a UUID",
            ),
            (
                FeedbackItem {
                    receipt: "K7Q2MI".into(),
                    ..item()
                },
                "Crockford",
            ),
            (
                FeedbackItem {
                    created_at: "yesterday".into(),
                    ..item()
                },
                "RFC 3339",
            ),
            (
                FeedbackItem {
                    rating: Some(4),
                    ..item()
                },
                "1, 2 or 3",
            ),
            (
                FeedbackItem {
                    kind: "praise".into(),
                    ..item()
                },
                "kind",
            ),
            (
                FeedbackItem {
                    kind: "objection".into(),
                    rating: None,
                    notice_scope: None,
                    notice_id: None,
                    notice_version: None,
                    ..item()
                },
                "names the notice",
            ),
            (
                FeedbackItem {
                    kind: "opinion".into(),
                    ..item()
                },
                "carries no rating",
            ),
            (
                FeedbackItem {
                    reasons: vec!["Bad Code".into()],
                    ..item()
                },
                "reasons",
            ),
            (
                FeedbackItem {
                    text: "长".repeat(1001),
                    ..item()
                },
                "longer",
            ),
            (
                FeedbackItem {
                    contact: "12345".into(),
                    ..item()
                },
                "mobile",
            ),
        ];
        for (item, expected) in cases {
            let problem = item.problem().unwrap_or_default();
            assert!(
                problem.contains(expected),
                "{problem:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn contacts_are_masked_for_staff() {
        assert_eq!(mask_contact("13812341234"), "138****1234");
        assert_eq!(mask_contact(""), "");
        assert_eq!(mask_contact("0531-1234"), "****");
    }
}
