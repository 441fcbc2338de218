//! Residents' feedback as staff read it: every item since a time (the CLI
//! and its CSV), one item by its id, and the console inbox's filtered page,
//! newest first, with its counts, answered by SQL through the indexes of
//! the inbox's migration rather than by loading every item.
//!
//! Times of receipt are stored as UTC with nine fractional digits
//! (`received_text`), so that their text sorts as the times do and SQL
//! compares and orders them as text. Whether an item was answered is kept
//! in `feedback.answered` by triggers on `replies` and `feedback`, whoever
//! writes them. What counts as overdue is decided by the caller
//! (`office::staff`), who passes the instant before which an unanswered
//! item is overdue: no working day is counted here.

use rusqlite::OptionalExtension;
use time::OffsetDateTime;

use super::{OfficeStore, Result, StoreError, parse_time};

/// One stored feedback item as staff see it, with the replies written to
/// its receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRow {
    pub id: String,
    pub screen: String,
    pub community: String,
    pub receipt: String,
    /// As the screen's clock had it.
    pub created_at: String,
    /// The office's clock: what deadlines count from.
    pub received_at: OffsetDateTime,
    /// The scope of an upper scope's notice; `None`: the screen's community.
    pub notice_scope: Option<String>,
    pub notice_id: Option<String>,
    pub notice_version: Option<u64>,
    pub kind: String,
    pub rating: Option<u8>,
    pub reasons: Vec<String>,
    pub text: String,
    /// Unmasked; callers mask it for display.
    pub contact: String,
    /// Ids of the reply notices written for this receipt, oldest first.
    pub replies: Vec<String>,
}

/// Where a page of the inbox starts: the item after which it lists, in
/// the inbox's order (newest first). Opaque to the console, which passes
/// `to_param` in the next-page link and `parse` back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackCursor {
    received_at: String,
    id: String,
}

impl FeedbackCursor {
    pub fn to_param(&self) -> String {
        format!("{}/{}", self.received_at, self.id)
    }

    /// `None` for anything `to_param` did not make.
    pub fn parse(param: &str) -> Option<FeedbackCursor> {
        let (received_at, id) = param.split_once('/')?;
        parse_time(received_at).ok()?;
        (!id.is_empty()).then(|| FeedbackCursor {
            received_at: received_at.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// What the inbox asks for. Every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct FeedbackQuery {
    /// `Some(false)`: items no reply was written for; `Some(true)`: answered.
    pub answered: Option<bool>,
    /// Items about this notice id.
    pub notice_id: Option<String>,
    /// Items that are overdue by this cutoff: unanswered and received
    /// before it.
    pub overdue_before: Option<OffsetDateTime>,
    /// The page: items after this one, in the inbox's order.
    pub after: Option<FeedbackCursor>,
    /// Items on a page at most.
    pub limit: usize,
}

/// One page of the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackPage {
    /// Newest first.
    pub rows: Vec<FeedbackRow>,
    /// Where the next page starts, when there is one.
    pub next: Option<FeedbackCursor>,
    /// Items that match the filters, on every page.
    pub matching: u64,
    /// Items overdue by the query's cutoff (or `overdue_cutoff`), whatever
    /// the filters.
    pub overdue: u64,
}

/// The stored text of a time of receipt: UTC, nine fractional digits, so
/// that text order is time order.
pub(super) fn received_text(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    t.format(&format)
        .unwrap_or_else(|_| crate::protocol::notice::rfc3339(t))
}

/// The columns `row` reads, in its order.
const COLUMNS: &str = "f.id, f.screen, f.community, f.receipt, f.created_at, f.received_at,
    f.notice_id, f.notice_version, f.kind, f.rating, f.reasons, f.text, f.contact,
    (SELECT group_concat(r.notice_id, ' ') FROM
        (SELECT notice_id FROM replies
         WHERE receipt = f.receipt AND community = f.community
         ORDER BY written_at, notice_id) r),
    f.notice_scope";

fn row(r: &rusqlite::Row<'_>) -> Result<FeedbackRow> {
    let reasons: String = r.get(10)?;
    let replies: Option<String> = r.get(13)?;
    Ok(FeedbackRow {
        id: r.get(0)?,
        screen: r.get(1)?,
        community: r.get(2)?,
        receipt: r.get(3)?,
        created_at: r.get(4)?,
        received_at: parse_time(&r.get::<_, String>(5)?)?,
        notice_scope: r.get(14)?,
        notice_id: r.get(6)?,
        notice_version: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        kind: r.get(8)?,
        rating: r.get(9)?,
        reasons: serde_json::from_str(&reasons)
            .map_err(|e| StoreError::Corrupt(format!("reasons {reasons:?}: {e}")))?,
        text: r.get(11)?,
        contact: r.get(12)?,
        replies: replies
            .map(|s| s.split(' ').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

impl OfficeStore {
    /// Feedback received at `since` or later (all of it without), oldest
    /// first, each with the replies written to its receipt.
    pub fn feedback_rows(&self, since: Option<OffsetDateTime>) -> Result<Vec<FeedbackRow>> {
        let bound = since.map(received_text).unwrap_or_default();
        let mut query = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM feedback f WHERE f.received_at >= ?1
             ORDER BY f.received_at, f.receipt, f.id"
        ))?;
        let mut rows = query.query([bound])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row(r)?);
        }
        Ok(out)
    }

    /// The item with this id.
    pub fn feedback_item(&self, id: &str) -> Result<Option<FeedbackRow>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM feedback f WHERE f.id = ?1"),
                [id],
                |r| Ok(row(r)),
            )
            .optional()?
            .transpose()
    }

    /// One page of the inbox: the newest items matching `query` after its
    /// cursor, how many match in all, and how many are overdue by
    /// `overdue_cutoff` (unanswered and received before it).
    pub fn feedback_page(
        &self,
        query: &FeedbackQuery,
        overdue_cutoff: OffsetDateTime,
    ) -> Result<FeedbackPage> {
        use rusqlite::types::Value;
        // Only the conditions asked for, so that the planner picks the
        // index that serves them (a condition made void by a NULL
        // parameter would keep it from any); values are bound, never
        // written into the SQL.
        let mut conditions: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(answered) = query.answered {
            conditions.push("f.answered = ?");
            values.push(Value::Integer(i64::from(answered)));
        }
        if let Some(notice) = &query.notice_id {
            conditions.push("f.notice_id = ?");
            values.push(Value::Text(notice.clone()));
        }
        if let Some(cutoff) = query.overdue_before {
            conditions.push("f.answered = 0 AND f.received_at < ?");
            values.push(Value::Text(received_text(cutoff)));
        }
        let filters = if conditions.is_empty() {
            "1".to_owned()
        } else {
            conditions.join(" AND ")
        };
        let matching: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM feedback f WHERE {filters}"),
            rusqlite::params_from_iter(&values),
            |r| r.get(0),
        )?;
        let overdue: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM feedback WHERE answered = 0 AND received_at < ?1",
            [received_text(overdue_cutoff)],
            |r| r.get(0),
        )?;
        let mut page_filters = filters;
        if let Some(after) = &query.after {
            page_filters.push_str(" AND (f.received_at, f.id) < (?, ?)");
            values.push(Value::Text(after.received_at.clone()));
            values.push(Value::Text(after.id.clone()));
        }
        let limit = query.limit.max(1);
        values.push(Value::Integer((limit + 1) as i64));
        let mut statement = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM feedback f WHERE {page_filters}
             ORDER BY f.received_at DESC, f.id DESC LIMIT ?"
        ))?;
        let mut found = statement.query(rusqlite::params_from_iter(&values))?;
        let mut rows = Vec::with_capacity(limit + 1);
        let mut texts = Vec::with_capacity(limit + 1);
        while let Some(r) = found.next()? {
            texts.push(r.get::<_, String>(5)?);
            rows.push(row(r)?);
        }
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            let last = &rows[limit - 1];
            FeedbackCursor {
                received_at: texts[limit - 1].clone(),
                id: last.id.clone(),
            }
        });
        Ok(FeedbackPage {
            rows,
            next,
            matching: matching as u64,
            overdue: overdue as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::feedback::FeedbackItem;
    use time::macros::datetime;

    fn item(n: u32, receipt: &str, notice: &str) -> FeedbackItem {
        FeedbackItem {
            id: format!("0192f1e4-7b7a-7cc3-9a51-6b3f4f{n:06}"),
            receipt: receipt.into(),
            created_at: "2026-10-08T10:00:00+08:00".into(),
            notice_scope: None,
            notice_id: Some(notice.into()),
            notice_version: Some(1),
            kind: "opinion".into(),
            rating: None,
            reasons: vec![],
            text: format!("意见 {n}"),
            contact: String::new(),
        }
    }

    fn ids(page: &FeedbackPage) -> Vec<String> {
        page.rows
            .iter()
            .map(|r| r.id[r.id.len() - 2..].to_owned())
            .collect()
    }

    #[test]
    fn times_of_receipt_sort_as_text() {
        let texts: Vec<String> = [
            datetime!(2026-10-08 02:00:05 UTC),
            datetime!(2026-10-08 02:00:05.000000001 UTC),
            datetime!(2026-10-08 02:00:05.5 UTC),
            datetime!(2026-10-08 10:00:06 +08:00),
        ]
        .into_iter()
        .map(received_text)
        .collect();
        assert_eq!(texts[0], "2026-10-08T02:00:05.000000000Z");
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        assert_eq!(
            parse_time(&texts[2]).unwrap(),
            datetime!(2026-10-08 02:00:05.5 UTC)
        );
    }

    /// The inbox's pages: newest first, filters in SQL, counts of all that
    /// match, and a cursor that neither skips nor repeats an item, even
    /// among items received at the same instant.
    #[test]
    fn the_inbox_pages_newest_first_with_filters_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        let base = datetime!(2026-09-01 02:00 UTC);
        // 12 items: every third about notice "b", four received at the
        // same instant, the rest a day apart.
        for n in 0..12u32 {
            let notice = if n % 3 == 0 { "b" } else { "a" };
            let at = if n < 4 {
                base
            } else {
                base + time::Duration::days(i64::from(n))
            };
            let it = item(n, &format!("R{n:05}"), notice);
            store
                .add_feedback_received_at("lobby-1", "lixia-demo", &[&it], at)
                .unwrap();
        }
        // Items 5 and 0 answered (0 by a reply written before it arrived
        // would not exist; it is written after).
        for n in [5u32, 0] {
            store
                .record_reply(
                    &format!("reply-{n}"),
                    "lixia-demo",
                    &[format!("R{n:05}")],
                    base + time::Duration::days(30),
                )
                .unwrap();
        }
        let cutoff = base + time::Duration::days(6);
        let page = |query: FeedbackQuery| store.feedback_page(&query, cutoff).unwrap();

        let mut seen = Vec::new();
        let mut query = FeedbackQuery {
            limit: 5,
            ..FeedbackQuery::default()
        };
        loop {
            let got = page(query.clone());
            assert_eq!(got.matching, 12);
            // Unanswered before day 6: items 1, 2, 3 (same instant) and 4.
            assert_eq!(got.overdue, 4);
            seen.extend(ids(&got));
            match got.next {
                Some(next) => {
                    let param = next.to_param();
                    query.after = Some(FeedbackCursor::parse(&param).unwrap());
                }
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "11", "10", "09", "08", "07", "06", "05", "04", "03", "02", "01", "00"
            ]
        );

        let open = page(FeedbackQuery {
            answered: Some(false),
            limit: 50,
            ..FeedbackQuery::default()
        });
        assert_eq!(open.matching, 10);
        assert!(!ids(&open).contains(&"05".to_owned()));
        let replied = page(FeedbackQuery {
            answered: Some(true),
            limit: 50,
            ..FeedbackQuery::default()
        });
        assert_eq!(ids(&replied), ["05", "00"]);
        assert_eq!(replied.rows[0].replies, ["reply-5"]);
        let about_b = page(FeedbackQuery {
            notice_id: Some("b".into()),
            overdue_before: Some(cutoff),
            limit: 50,
            ..FeedbackQuery::default()
        });
        assert_eq!(ids(&about_b), ["03"], "overdue and about b");
        assert_eq!(about_b.matching, 1);
        assert!(FeedbackCursor::parse("nonsense").is_none());
        let one = store
            .feedback_item("0192f1e4-7b7a-7cc3-9a51-6b3f4f000005")
            .unwrap()
            .unwrap();
        assert_eq!((one.receipt.as_str(), one.replies.len()), ("R00005", 1));
        assert_eq!(store.feedback_item("nobody").unwrap(), None);
    }

    /// A reply recorded before its item arrives (an import), and one
    /// deleted by hand: the answered mark follows both.
    #[test]
    fn the_answered_mark_follows_replies_whoever_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        store
            .record_reply(
                "reply-early",
                "lixia-demo",
                &["K7Q2MD".into()],
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let it = item(1, "K7Q2MD", "a");
        store.add_feedback("lobby-1", "lixia-demo", &[&it]).unwrap();
        let answered = |store: &OfficeStore| {
            store
                .feedback_page(
                    &FeedbackQuery {
                        answered: Some(true),
                        limit: 10,
                        ..FeedbackQuery::default()
                    },
                    OffsetDateTime::now_utc(),
                )
                .unwrap()
                .matching
        };
        assert_eq!(answered(&store), 1);
        store
            .conn
            .execute("DELETE FROM replies WHERE notice_id = 'reply-early'", [])
            .unwrap();
        assert_eq!(answered(&store), 0);
    }
}
