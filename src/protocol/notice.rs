//! The notice payload (PROTOCOL.md section 3.2) and every rule it must keep.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::rejection::Rejection;

pub const MAX_TITLE_CHARS: usize = 120;
pub const MAX_SUMMARY_CHARS: usize = 300;
pub const MAX_BODY_BLOCKS: usize = 200;
pub const MAX_MEDIA: usize = 16;
pub const MAX_MEDIA_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_QR_URL_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Affairs,
    Finance,
    Government,
    Services,
    Reply,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Affairs,
        Category::Finance,
        Category::Government,
        Category::Services,
        Category::Reply,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Affairs => "affairs",
            Category::Finance => "finance",
            Category::Government => "government",
            Category::Services => "services",
            Category::Reply => "reply",
        }
    }

    /// The name residents see on screen.
    pub fn label_zh(self) -> &'static str {
        match self {
            Category::Affairs => "居务公开",
            Category::Finance => "财务公开",
            Category::Government => "政务公开",
            Category::Services => "居民关心事项",
            Category::Reply => "反馈答复",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Priority::Normal, Priority::High, Priority::Urgent]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Status::Active, Status::Withdrawn]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Block {
    Paragraph {
        text: String,
    },
    Table {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Image {
        media: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    pub id: String,
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
    pub mime: String,
}

/// A notice payload. Unknown fields are ignored for forward compatibility;
/// `validate` enforces the rules serde cannot express.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub schema: u64,
    pub id: String,
    pub version: u64,
    pub community: String,
    pub category: Category,
    pub priority: Priority,
    pub status: Status,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub body: Vec<Block>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub publisher: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    pub contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_url: Option<String>,
    #[serde(default)]
    pub screens: Vec<String>,
    /// **[1.1]** Upper scopes only (section 3.7): the communities under the
    /// scope whose screens show it; empty for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    #[serde(default)]
    pub reply_to: Vec<String>,
    /// Whether a trusted supervisor's signature verified over this payload
    /// (section 4's review mark). Never read from the payload: only the
    /// screen's verification sets it, and the store keeps what it found.
    #[serde(skip)]
    pub review_verified: bool,
}

/// Parses a payload of schema 1 into `T`. `schema` is read before anything
/// else, so that a payload of a newer schema is reported as such instead of as
/// a field error; field errors name the field (`body[2].rows: ...`).
pub(crate) fn parse_payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Rejection::PayloadNotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(Rejection::PayloadNotJson(
            "payload is not a JSON object".into(),
        ));
    }
    match value.get("schema") {
        None => return Err(Rejection::invalid("missing field `schema`")),
        Some(v) => match v.as_u64() {
            Some(1) => {}
            Some(n) if n > 1 => return Err(Rejection::UnsupportedSchema(n)),
            _ => return Err(Rejection::invalid(format!("schema must be 1, found {v}"))),
        },
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Rejection::invalid(format!("{path}: {}", e.into_inner()))
    })
}

impl Notice {
    /// The notice inside envelope bytes, parsed and validated; signatures are
    /// not checked here (`verify_message` does that).
    pub fn from_envelope(envelope: &[u8]) -> Result<Self, Rejection> {
        Self::from_payload(&super::Envelope::parse(envelope)?.payload_bytes()?)
    }

    /// Parses and validates payload bytes (already base64-decoded).
    pub fn from_payload(bytes: &[u8]) -> Result<Self, Rejection> {
        let notice: Notice = parse_payload(bytes)?;
        notice.validate()?;
        Ok(notice)
    }

    /// Every rule of section 3.2 that the types alone do not enforce.
    pub fn validate(&self) -> Result<(), Rejection> {
        let bad = |msg: String| Err(Rejection::Invalid(msg));
        if !super::is_valid_id(&self.id) {
            return bad(format!("id {:?} does not match the id pattern", self.id));
        }
        if !super::is_valid_id(&self.community) {
            return bad(format!(
                "community {:?} does not match the id pattern",
                self.community
            ));
        }
        super::check_version("version", self.version)?;
        let title_chars = self.title.chars().count();
        if self.title.trim().is_empty() || title_chars > MAX_TITLE_CHARS {
            return bad(format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters, found {title_chars}"
            ));
        }
        if let Some(summary) = &self.summary {
            let n = summary.chars().count();
            if n > MAX_SUMMARY_CHARS {
                return bad(format!(
                    "summary must be at most {MAX_SUMMARY_CHARS} characters, found {n}"
                ));
            }
        }
        if self.body.is_empty() || self.body.len() > MAX_BODY_BLOCKS {
            return bad(format!(
                "body must hold 1 to {MAX_BODY_BLOCKS} blocks, found {}",
                self.body.len()
            ));
        }
        self.validate_media()?;
        for (i, block) in self.body.iter().enumerate() {
            match block {
                Block::Paragraph { .. } => {}
                Block::Table { header, rows, .. } => {
                    if header.is_empty() {
                        return bad(format!("table in body block {} has an empty header", i + 1));
                    }
                    if let Some((r, row)) = rows
                        .iter()
                        .enumerate()
                        .find(|(_, r)| r.len() != header.len())
                    {
                        return bad(format!(
                            "table in body block {}: row {} has {} cells, the header has {}",
                            i + 1,
                            r + 1,
                            row.len(),
                            header.len()
                        ));
                    }
                }
                Block::Image { media, .. } => {
                    if !self.media.iter().any(|m| &m.id == media) {
                        return bad(format!(
                            "image in body block {} names media {media:?}, which is not in `media`",
                            i + 1
                        ));
                    }
                }
            }
        }
        if let Some(period) = &self.period {
            if !is_valid_period(period) {
                return bad(format!(
                    "period {period:?} is not like 2026Q3, 2026-09 or 2026"
                ));
            }
        }
        if self.valid_until <= self.valid_from {
            return bad(format!(
                "valid_until ({}) must be later than valid_from ({})",
                rfc3339(self.valid_until),
                rfc3339(self.valid_from)
            ));
        }
        if self.publisher.trim().is_empty() {
            return bad("publisher (公开主体) must not be empty".into());
        }
        if self.contact.trim().is_empty() {
            return bad("contact (监督电话) must not be empty".into());
        }
        if let Some(url) = &self.qr_url {
            if url.len() > MAX_QR_URL_BYTES || !is_http_url(url) {
                return bad(format!(
                    "qr_url must be an http(s) link of at most {MAX_QR_URL_BYTES} bytes"
                ));
            }
        }
        if let Some(screen) = self.screens.iter().find(|s| !super::is_valid_id(s)) {
            return bad(format!("screens: {screen:?} is not a valid screen id"));
        }
        if let Some(c) = self.communities.iter().find(|c| !super::is_valid_id(c)) {
            return bad(format!("communities: {c:?} is not a valid community id"));
        }
        if let Some(code) = self.reply_to.iter().find(|c| !is_receipt_code(c)) {
            return bad(format!(
                "reply_to: {code:?} is not a 6-character receipt code"
            ));
        }
        Ok(())
    }

    fn validate_media(&self) -> Result<(), Rejection> {
        if self.media.len() > MAX_MEDIA {
            return Err(Rejection::invalid(format!(
                "media holds {} items, at most {MAX_MEDIA} are allowed",
                self.media.len()
            )));
        }
        for (i, m) in self.media.iter().enumerate() {
            let problem = if self.media[..i].iter().any(|other| other.id == m.id) {
                Some("its id is not unique")
            } else if !is_http_url(&m.url) {
                Some("url must be http(s)")
            } else if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some("sha256 must be 64 hex characters")
            } else if m.bytes > MAX_MEDIA_BYTES {
                Some("bytes exceeds 10 MiB")
            } else if !matches!(m.mime.as_str(), "image/jpeg" | "image/png" | "image/webp") {
                Some("mime must be image/jpeg, image/png or image/webp")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(Rejection::invalid(format!("media {:?}: {problem}", m.id)));
            }
        }
        Ok(())
    }

    /// Whether this screen is among the notice's target screens.
    pub fn targets(&self, screen: &str) -> bool {
        self.screens.is_empty() || self.screens.iter().any(|s| s == screen)
    }

    /// Every piece of text a resident can read, for the personal-data scan.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = vec![
            self.title.as_str(),
            self.publisher.as_str(),
            self.contact.as_str(),
        ];
        out.extend(self.summary.as_deref());
        out.extend(self.reviewer.as_deref());
        for block in &self.body {
            match block {
                Block::Paragraph { text } => out.push(text),
                Block::Table {
                    caption,
                    header,
                    rows,
                } => {
                    out.extend(caption.as_deref());
                    out.extend(header.iter().map(String::as_str));
                    out.extend(rows.iter().flatten().map(String::as_str));
                }
                Block::Image { caption, .. } => out.extend(caption.as_deref()),
            }
        }
        out
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

fn is_valid_period(p: &str) -> bool {
    let b = p.as_bytes();
    let year = |s: &[u8]| s.len() == 4 && s.iter().all(u8::is_ascii_digit);
    match b.len() {
        4 => year(b),
        6 => year(&b[..4]) && b[4] == b'Q' && (b'1'..=b'4').contains(&b[5]),
        7 => {
            year(&b[..4])
                && b[4] == b'-'
                && matches!(
                    std::str::from_utf8(&b[5..])
                        .ok()
                        .and_then(|m| m.parse::<u8>().ok()),
                    Some(1..=12)
                )
                && b[5].is_ascii_digit()
        }
        _ => false,
    }
}

/// Receipt codes are 6 characters of Crockford base32 (no I, L, O, U).
pub fn is_receipt_code(s: &str) -> bool {
    s.len() == 6
        && s.bytes().all(|b| {
            b.is_ascii_digit()
                || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::from_str(include_str!("../../samples/2026q3-finance.json")).unwrap()
    }

    fn check(value: &serde_json::Value) -> Result<Notice, Rejection> {
        Notice::from_payload(value.to_string().as_bytes())
    }

    #[test]
    fn every_sample_is_valid() {
        for (name, text) in crate::samples::ALL {
            Notice::from_payload(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn periods() {
        for ok in ["2026", "2026Q3", "2026-09", "2026-12"] {
            assert!(is_valid_period(ok), "{ok}");
        }
        for bad in ["26", "2026Q5", "2026-13", "2026-00", "2026-9", "2026q3"] {
            assert!(!is_valid_period(bad), "{bad}");
        }
    }

    #[test]
    fn rules_name_the_field_at_fault() {
        type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("title", Box::new(|v| v["title"] = "".into())),
            (
                "summary",
                Box::new(|v| v["summary"] = "长".repeat(301).into()),
            ),
            ("body", Box::new(|v| v["body"] = serde_json::json!([]))),
            (
                "media",
                Box::new(|v| v["body"] = serde_json::json!([{"type": "image", "media": "m9"}])),
            ),
            (
                "valid_until",
                Box::new(|v| v["valid_until"] = v["valid_from"].clone()),
            ),
            (
                "qr_url",
                Box::new(|v| v["qr_url"] = "ftp://x.example/a".into()),
            ),
            ("category", Box::new(|v| v["category"] = "sports".into())),
            (
                "valid_from",
                Box::new(|v| v["valid_from"] = "2026-01-01T00:00:00".into()),
            ),
            (
                "reply_to",
                Box::new(|v| v["reply_to"] = serde_json::json!(["ILOU00"])),
            ),
            (
                "screens",
                Box::new(|v| v["screens"] = serde_json::json!(["/bad"])),
            ),
            ("contact", Box::new(|v| v["contact"] = " ".into())),
        ];
        for (field, mutate) in cases {
            let mut v = sample();
            mutate(&mut v);
            let err = check(&v).expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_newer_schema_is_reported_as_unsupported() {
        let mut v = sample();
        v["schema"] = 2.into();
        v["body"] = "a future shape".into();
        assert_eq!(check(&v), Err(Rejection::UnsupportedSchema(2)));
    }
}
