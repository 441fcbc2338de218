//! What staff do with what screens sent, behind `gongkai office token`,
//! `gongkai office feedback` and its CSV export: issuing screens' tokens,
//! listing feedback with contact numbers masked or revealed, and each
//! item's reply deadline in working days (工作日).
//!
//! Contact numbers leave this module masked unless the caller names who
//! asked to see them, which the audit trail records before any number is
//! returned. These commands open the database themselves, beside a running
//! server: SQLite's WAL lets them. Nothing here serves HTTP or writes
//! replies (`office::reply`).

use anyhow::Context;
use time::{Date, OffsetDateTime};

use crate::protocol::feedback::{REPLY_WORKING_DAYS, mask_contact};
use crate::protocol::notice::rfc3339;
use crate::protocol::sha256_hex;
use crate::store::office::{FeedbackRow, OfficeStore};
use crate::workdays::{Calendar, china_date};

use super::config::ServerConfig;

/// A new random token for a screen: 32 bytes, base64url. The office keeps
/// only its hash; the token itself is shown once.
///
/// `community` binds the screen to its community: its requests must name
/// it. Without one, a new screen is bound by its first accepted request
/// (trust on first use, so that tokens issued before communities were
/// recorded, and scripts that do not pass one, keep working), and a
/// screen issued a new token keeps the community it had.
pub fn issue_token(
    config: &ServerConfig,
    screen: &str,
    community: Option<&str>,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        crate::protocol::is_valid_id(screen),
        "{screen:?} is not a valid screen id"
    );
    if let Some(community) = community {
        anyhow::ensure!(
            crate::protocol::is_valid_id(community),
            "{community:?} is not a valid community id"
        );
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let store = OfficeStore::open(&config.database)?;
    store.set_token(screen, &sha256_hex(token.as_bytes()), community)?;
    Ok(token)
}

/// The last day (a China date) by which staff owe this item a reply:
/// `REPLY_WORKING_DAYS` working days of `calendar` after the day it reached
/// the office. Counted from the office's clock at receipt: a screen's clock
/// may be wrong, and the office cannot answer before the item arrives.
pub fn reply_due(row: &FeedbackRow, calendar: &Calendar) -> Date {
    calendar.add_working_days(china_date(row.received_at), REPLY_WORKING_DAYS)
}

/// Whether staff still owe this item a reply past its deadline (逾期未复):
/// no reply written, and the due day is over in China.
pub fn is_overdue(row: &FeedbackRow, now: OffsetDateTime, calendar: &Calendar) -> bool {
    row.replies.is_empty() && china_date(now) > reply_due(row, calendar)
}

/// The instant before which an unanswered item is overdue at `now`: the
/// start, in China, of the first day whose reply deadline has not passed.
/// `is_overdue(row)` is exactly `row.received_at < overdue_cutoff(now)` for
/// an unanswered row, since a later day of receipt never has an earlier
/// deadline; the store compares times of receipt with it, so that no
/// working day is counted in SQL.
pub fn overdue_cutoff(now: OffsetDateTime, calendar: &Calendar) -> OffsetDateTime {
    let today = china_date(now);
    // Today's items are due after today: step back while the day before
    // is still in time. At most a few weeks of steps, holidays included.
    let mut first_in_time = today;
    while let Some(before) = first_in_time.previous_day() {
        if calendar.add_working_days(before, REPLY_WORKING_DAYS) < today {
            break;
        }
        first_in_time = before;
    }
    first_in_time
        .midnight()
        .assume_offset(crate::workdays::CHINA)
}

/// A warning for staff when the calendar does not list the holidays of a
/// year that a deadline shown falls in (or of this year): such deadlines
/// count weekends only.
pub fn calendar_warning(
    rows: &[FeedbackRow],
    now: OffsetDateTime,
    calendar: &Calendar,
) -> Option<String> {
    let mut years: Vec<i32> = rows
        .iter()
        .map(|r| reply_due(r, calendar).year())
        .chain([china_date(now).year()])
        .filter(|y| !calendar.covers(*y))
        .collect();
    years.sort_unstable();
    years.dedup();
    if years.is_empty() {
        return None;
    }
    let years: Vec<String> = years.iter().map(i32::to_string).collect();
    Some(format!(
        "the holiday calendar does not list {}: deadlines there count weekends only; \
         name a calendar with `holidays` in office.toml",
        years.join(", ")
    ))
}

/// `--since`: an RFC 3339 time, or a date `YYYY-MM-DD` meaning its start at
/// `offset` (the office's local time).
pub fn parse_since(text: &str, offset: time::UtcOffset) -> anyhow::Result<OffsetDateTime> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| {
        format!(
            "--since {text:?}: expected RFC 3339 (2026-10-08T09:00:00+08:00) or a date (2026-10-08)"
        )
    })?;
    Ok(date.midnight().assume_offset(offset))
}

/// The office's database of `config`, which must exist: a command that only
/// reads or answers feedback has nothing to do with an empty one, and should
/// not leave one behind where the path was mistyped.
pub(super) fn open_existing(config: &ServerConfig) -> anyhow::Result<OfficeStore> {
    anyhow::ensure!(
        config.database.exists(),
        "no office database at {} (it is made by `gongkai office serve` or `gongkai office token`)",
        config.database.display()
    );
    Ok(OfficeStore::open(&config.database)?)
}

/// Who reveals contact numbers: the audit trail's `who`.
pub enum Contacts<'a> {
    /// Shown as 138****1234.
    Masked,
    /// Shown in full to this user, which the audit trail records.
    RevealedTo(&'a str),
}

/// Feedback received at `since` or later, oldest first, for staff. Contact
/// numbers are masked unless revealed; a reveal is written to the audit
/// trail (and logged) before any number is returned, so that no number is
/// seen without a record of it.
pub fn feedback_for_staff(
    config: &ServerConfig,
    since: Option<OffsetDateTime>,
    contacts: Contacts<'_>,
) -> anyhow::Result<Vec<FeedbackRow>> {
    let store = open_existing(config)?;
    let mut rows = store.feedback_rows(since)?;
    match contacts {
        Contacts::Masked => {
            for row in &mut rows {
                row.contact = mask_contact(&row.contact);
            }
        }
        Contacts::RevealedTo(who) => {
            let with_contact: Vec<&str> = rows
                .iter()
                .filter(|r| !r.contact.is_empty())
                .map(|r| r.receipt.as_str())
                .collect();
            const LISTED: usize = 50;
            let mut receipts = with_contact
                .iter()
                .take(LISTED)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            if with_contact.len() > LISTED {
                receipts.push_str(&format!(" and {} more", with_contact.len() - LISTED));
            }
            let what = format!(
                "revealed the contact numbers of {} feedback items{} (receipts: {})",
                with_contact.len(),
                since
                    .map(|t| format!(" received since {}", rfc3339(t)))
                    .unwrap_or_default(),
                if receipts.is_empty() {
                    "none"
                } else {
                    &receipts
                }
            );
            tracing::warn!(target: "audit", "{who} {what}");
            store
                .audit(who, &what)
                .context("recording the reveal in the audit trail; no number was shown")?;
        }
    }
    Ok(rows)
}

/// Feedback as CSV (RFC 4180: CRLF line ends, a header row, fields quoted
/// where they hold commas, quotes or line breaks). Times are RFC 3339 at
/// `offset`; `reply_due` is the China date of the reply deadline.
pub fn feedback_csv(
    rows: &[FeedbackRow],
    now: OffsetDateTime,
    offset: time::UtcOffset,
    calendar: &Calendar,
) -> String {
    let mut out = String::new();
    let mut line = |fields: &[&str]| {
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&quoted.join(","));
        out.push_str("\r\n");
    };
    line(&[
        "id",
        "receipt",
        "received_at",
        "created_at",
        "screen",
        "community",
        "kind",
        "rating",
        "notice_id",
        "notice_version",
        "reasons",
        "text",
        "contact",
        "replies",
        "reply_due",
        "overdue",
    ]);
    for r in rows {
        let rating = r.rating.map(|n| n.to_string()).unwrap_or_default();
        let version = r.notice_version.map(|n| n.to_string()).unwrap_or_default();
        line(&[
            &r.id,
            &r.receipt,
            &rfc3339(
                r.received_at
                    .replace_nanosecond(0)
                    .unwrap_or(r.received_at)
                    .to_offset(offset),
            ),
            &r.created_at,
            &r.screen,
            &r.community,
            &r.kind,
            &rating,
            r.notice_id.as_deref().unwrap_or(""),
            &version,
            &r.reasons.join(" "),
            &defuse_formula(&r.text),
            &r.contact,
            &r.replies.join(" "),
            &reply_due(r, calendar).to_string(),
            if is_overdue(r, now, calendar) {
                "yes"
            } else {
                "no"
            },
        ]);
    }
    out
}

/// One CSV field, quoted when it must be.
pub fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Residents type the text at a public kiosk and staff open the export in a
/// spreadsheet, which would run a text starting with `=`, `+`, `-` or `@` as
/// a formula: such a text gets a leading apostrophe (OWASP's advice), which
/// spreadsheets show as text.
fn defuse_formula(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain 文本"), "plain 文本");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(defuse_formula("=1+1"), "'=1+1");
        assert_eq!(defuse_formula("1+1"), "1+1");
    }

    #[test]
    fn since_takes_a_time_or_a_date() {
        let east8 = time::macros::offset!(+8);
        assert_eq!(
            parse_since("2026-10-08", east8).unwrap(),
            time::macros::datetime!(2026-10-08 00:00 +08:00)
        );
        assert_eq!(
            parse_since("2026-10-08T09:30:00Z", east8).unwrap(),
            time::macros::datetime!(2026-10-08 09:30 UTC)
        );
        assert!(parse_since("yesterday", east8).is_err());
    }

    fn received(at: OffsetDateTime) -> FeedbackRow {
        FeedbackRow {
            id: "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10".into(),
            screen: "lobby-3".into(),
            community: "lixia-demo".into(),
            receipt: "K7Q2MD".into(),
            created_at: rfc3339(at),
            received_at: at,
            notice_scope: None,
            notice_id: None,
            notice_version: None,
            kind: "opinion".into(),
            rating: None,
            reasons: vec![],
            text: String::new(),
            contact: String::new(),
            replies: vec![],
        }
    }

    /// Regression: the office flagged an item overdue after 10 calendar
    /// days, while the kiosk promises an answer within 10 working days.
    #[test]
    fn the_reply_deadline_is_ten_working_days_in_china() {
        use time::macros::{date, datetime};
        let cn = Calendar::national();
        // Friday 13 February 2026, 20:00 in China (12:00 UTC): the next
        // day is a make-up Saturday, then 春节 until the 23rd: the 14th,
        // 24th to 28th (another make-up Saturday), 2nd to 5th March.
        let row = received(datetime!(2026-02-13 12:00 UTC));
        assert_eq!(reply_due(&row, &cn), date!(2026 - 03 - 05));
        // Ten calendar days later the old rule said overdue; not now.
        assert!(!is_overdue(&row, datetime!(2026-02-24 12:00 UTC), &cn));
        // The whole due day in China is still in time.
        assert!(!is_overdue(&row, datetime!(2026-03-05 15:59 UTC), &cn));
        assert!(is_overdue(&row, datetime!(2026-03-05 16:00 UTC), &cn));
        // 23:30 UTC on the 13th is already the 14th in China.
        let late = received(datetime!(2026-02-13 23:30 UTC));
        assert_eq!(reply_due(&late, &cn), date!(2026 - 03 - 06));
        // Answered: never overdue.
        let mut answered = row.clone();
        answered.replies.push("reply-20260301-k7q2md".into());
        assert!(!is_overdue(&answered, datetime!(2026-06-01 00:00 UTC), &cn));
    }

    /// The cutoff the store filters by agrees with `is_overdue` for every
    /// hour of receipt over months around 春节 and 国庆, and every `now`.
    #[test]
    fn the_overdue_cutoff_agrees_with_is_overdue() {
        use time::macros::datetime;
        let cn = Calendar::national();
        for now in [
            datetime!(2026-02-24 12:00 UTC),
            datetime!(2026-03-05 15:59 UTC),
            datetime!(2026-03-05 16:00 UTC),
            datetime!(2026-10-09 01:00 UTC),
            datetime!(2026-10-12 23:30 UTC),
        ] {
            let cutoff = overdue_cutoff(now, &cn);
            let mut at = now - time::Duration::days(60);
            while at <= now {
                let row = received(at);
                assert_eq!(
                    is_overdue(&row, now, &cn),
                    row.received_at < cutoff,
                    "received {at}, now {now}, cutoff {cutoff}"
                );
                at += time::Duration::minutes(37);
            }
        }
        // Friday 13 February 2026 in China is due 5 March: overdue from
        // the 6th on, and the 14th (due the 6th) not yet.
        assert_eq!(
            overdue_cutoff(datetime!(2026-03-05 16:00 UTC), &cn),
            datetime!(2026-02-14 00:00 +08:00)
        );
    }

    #[test]
    fn staff_are_warned_of_years_without_holidays() {
        use time::macros::datetime;
        let cn = Calendar::national();
        let now = datetime!(2026-10-08 02:00 UTC);
        assert_eq!(calendar_warning(&[received(now)], now, &cn), None);
        let december_2027 = received(datetime!(2027-12-28 02:00 UTC));
        let warning = calendar_warning(&[december_2027], now, &cn).unwrap();
        assert!(warning.contains("does not list 2028"), "{warning}");
    }
}
