//! `gongkai office reply`: the payload of a `reply` notice answering
//! residents' receipts, which staff then sign and publish like any notice.
//!
//! A reply passes the same validation as any notice before it is written,
//! is never written over a file, and marks its receipts as answered only
//! once the file is there. This module signs and publishes nothing.

use std::path::Path;

use anyhow::{Context, bail};
use time::OffsetDateTime;

use crate::protocol::notice::{Block, Category, Notice, Priority, Status, is_receipt_code};

use super::config::ServerConfig;
use super::staff::open_existing;

/// How long a reply notice stays on screens.
pub const REPLY_SHOWN_FOR: time::Duration = time::Duration::days(30);

/// What `gongkai office reply` is asked to write.
pub struct ReplyRequest<'a> {
    /// Receipt codes, in any case.
    pub receipts: &'a [String],
    pub text: &'a str,
    pub publisher: &'a str,
    pub contact: &'a str,
    /// Needed only when a receipt is found in more than one community.
    pub community: Option<&'a str>,
}

/// A reply payload written.
#[derive(Debug)]
pub struct WrittenReply {
    pub notice_id: String,
    pub community: String,
    pub receipts: Vec<String>,
}

/// Writes the payload of a `reply` notice answering the receipts to `output`
/// (never over an existing file) and records the receipts as answered.
/// Nothing is written unless every receipt is known and all belong to one
/// community. `now` is at the office's local offset: it gives the payload's
/// times and the date in its id and title.
pub fn write_reply(
    config: &ServerConfig,
    request: &ReplyRequest<'_>,
    output: &Path,
    now: OffsetDateTime,
) -> anyhow::Result<WrittenReply> {
    let mut receipts: Vec<String> = Vec::new();
    for code in request.receipts {
        let code = code.trim().to_uppercase();
        anyhow::ensure!(
            is_receipt_code(&code),
            "{code:?} is not a receipt code (6 characters of 0-9 and A-Z without I, L, O, U)"
        );
        if !receipts.contains(&code) {
            receipts.push(code);
        }
    }
    anyhow::ensure!(!receipts.is_empty(), "name at least one receipt");
    let text = request.text.trim();
    anyhow::ensure!(!text.is_empty(), "--text must not be empty");
    if output.exists() {
        bail!(
            "{} exists; a reply is never written over a file",
            output.display()
        );
    }
    let mut store = open_existing(config)?;

    // Each receipt's community; every problem is reported at once.
    let mut unknown = Vec::new();
    let mut ambiguous = Vec::new();
    let mut found: Vec<(String, String)> = Vec::new();
    for receipt in &receipts {
        let mut communities = store.communities_of_receipt(receipt)?;
        if let Some(c) = request.community {
            communities.retain(|x| x == c);
        }
        match communities.as_slice() {
            [] => unknown.push(receipt.as_str()),
            [one] => found.push((receipt.clone(), one.clone())),
            many => ambiguous.push(format!("{receipt} ({})", many.join(", "))),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "no feedback in {} carries receipt {}{}; nothing was written",
            config.database.display(),
            unknown.join(", "),
            request
                .community
                .map(|c| format!(" in community {c}"))
                .unwrap_or_default()
        );
    }
    if !ambiguous.is_empty() {
        bail!(
            "receipts found in more than one community: {}; name one with --community; nothing was written",
            ambiguous.join("; ")
        );
    }
    let community = found[0].1.clone();
    if let Some((receipt, other)) = found.iter().find(|(_, c)| *c != community) {
        bail!(
            "a reply is shown in one community: {} is from {community}, {receipt} from {other}; write one reply per community; nothing was written",
            found[0].0
        );
    }

    // A fresh id: screens refuse a second version 1 with other content as
    // an equivocation, so an id written before is never reused.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let date = now.date();
    let base = format!(
        "reply-{:04}{:02}{:02}-{}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        receipts[0].to_lowercase()
    );
    let mut notice_id = base.clone();
    let mut n = 1;
    while store.reply_id_taken(&notice_id)? {
        n += 1;
        notice_id = format!("{base}-{n}");
    }

    let notice = Notice {
        schema: 1,
        id: notice_id.clone(),
        version: 1,
        community: community.clone(),
        category: Category::Reply,
        priority: Priority::Normal,
        status: Status::Active,
        title: format!(
            "居民意见答复（{}年{}月{}日）",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        summary: None,
        body: vec![Block::Paragraph {
            text: text.to_owned(),
        }],
        media: vec![],
        period: None,
        valid_from: now,
        valid_until: now + REPLY_SHOWN_FOR,
        issued_at: now,
        publisher: request.publisher.trim().to_owned(),
        reviewer: None,
        contact: request.contact.trim().to_owned(),
        qr_url: None,
        screens: vec![],
        communities: vec![],
        review_verified: false,
        reply_to: receipts.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&notice)?;
    bytes.push(b'\n');
    // The same parsing and rules `gongkai sign` and every screen apply.
    Notice::from_payload(&bytes).map_err(|e| anyhow::anyhow!("the reply would be refused: {e}"))?;

    // No clobbering even if the file appeared since the check above.
    crate::files::write_new_atomically(output, &bytes)
        .with_context(|| format!("writing {}", output.display()))?;
    // Recorded after the file is there, so that a receipt is never marked
    // answered without a reply to show; if recording fails, the file goes
    // too, so that a second try writes the same id afresh.
    if let Err(e) = store.record_reply(&notice_id, &community, &receipts, now) {
        let _ = std::fs::remove_file(output);
        return Err(anyhow::Error::new(e).context("recording the reply; nothing was written"));
    }
    Ok(WrittenReply {
        notice_id,
        community,
        receipts,
    })
}
