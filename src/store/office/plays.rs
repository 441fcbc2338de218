//! The office's copy of every screen's proof-of-play chain (PROTOCOL.md
//! 1.1, section 7): a batch is judged by `protocol::plays::judge` against
//! the chain held, inside the transaction that stores it, so that two
//! requests of one screen can never both extend the chain from the same
//! record. A refused batch stores nothing of itself, only the conflict; a
//! screen that begins again at seq 1 gets a new chain and the old one is
//! kept. Reading the chains back (for `gongkai office plays`) is here too.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::{OfficeStore, Result, parse_time};
use crate::protocol::notice::rfc3339;
use crate::protocol::plays::{ChainVerdict, PlayRecord, Trigger, judge};

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaysOutcome {
    /// 200: `stored` records were new; the chain now lacks `next_seq`
    /// first. `restarted` is the number of the chain this batch began, when
    /// it began one after another.
    Stored {
        stored: usize,
        next_seq: u64,
        restarted: Option<u64>,
    },
    /// 409: the batch starts past `next_seq`.
    Gap { next_seq: u64 },
    /// 400: refused, and the conflict recorded.
    Refused { reason: String },
}

/// One chain of one screen, as held.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSummary {
    pub screen: String,
    /// 1 for a screen's first chain; more after a restart.
    pub chain: u64,
    pub community: String,
    /// When the office stored its first record (the office's clock).
    pub begun_at: String,
    pub records: u64,
    /// The highest seq held (0 when none).
    pub last_seq: u64,
}

/// A refused batch, as the office recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayConflict {
    pub screen: String,
    pub chain: u64,
    pub seq: u64,
    pub reason: String,
    /// The refused record as the screen sent it (JSON).
    pub record: String,
    pub first_at: String,
    pub last_at: String,
    pub times: u64,
}

/// One time a notice was on a screen, from a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticePlay {
    pub screen: String,
    pub community: String,
    pub chain: u64,
    pub record: PlayRecord,
}

/// A play a screen sent before play chains (protocol 1.0), kept as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyPlay {
    pub screen: String,
    pub community: String,
    pub notice_id: String,
    pub version: u64,
    pub started_at: String,
    pub duration_ms: u64,
}

const RECORD_COLUMNS: &str = "seq, scope, notice_id, version, started_at, duration_ms, \
                              pages_shown, triggered_by, prev, hash";

fn record_of(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<PlayRecord> {
    let trigger: String = r.get(at + 7)?;
    Ok(PlayRecord {
        seq: r.get::<_, i64>(at)? as u64,
        scope: r.get(at + 1)?,
        notice_id: r.get(at + 2)?,
        version: r.get::<_, i64>(at + 3)? as u64,
        started_at: r.get(at + 4)?,
        duration_ms: r.get::<_, i64>(at + 5)? as u64,
        pages_shown: r.get(at + 6)?,
        trigger: match trigger.as_str() {
            "touch" => Trigger::Touch,
            _ => Trigger::Rotation,
        },
        prev: r.get(at + 8)?,
        hash: r.get(at + 9)?,
    })
}

/// The current chain of `screen`, if it has one.
fn current_chain(tx: &Transaction<'_>, screen: &str) -> Result<Option<u64>> {
    Ok(tx
        .query_row(
            "SELECT MAX(chain) FROM play_chains WHERE screen = ?1",
            [screen],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .map(|c| c as u64))
}

/// How many records a chain holds, and its highest seq.
#[derive(Debug, Clone, Copy)]
struct Extent {
    count: u64,
    last: u64,
}

fn extent(tx: &Transaction<'_>, screen: &str, chain: u64) -> Result<Extent> {
    let (count, last): (i64, i64) = tx.query_row(
        "SELECT held, (SELECT COALESCE(MAX(seq), 0) FROM chain_plays
                       WHERE screen = ?1 AND chain = ?2)
         FROM play_chains WHERE screen = ?1 AND chain = ?2",
        params![screen, chain as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Extent {
        count: count as u64,
        last: last as u64,
    })
}

/// The first seq the chain lacks: one past the last record when nothing
/// is missing before it (the usual case, told by the count), else the
/// first hole (records lost from the office's database), so that the
/// screen sends them again.
fn first_missing(tx: &Transaction<'_>, screen: &str, chain: u64, extent: Extent) -> Result<u64> {
    if extent.count == extent.last {
        return Ok(extent.last + 1);
    }
    let has_first = tx
        .query_row(
            "SELECT 1 FROM chain_plays WHERE screen = ?1 AND chain = ?2 AND seq = 1",
            params![screen, chain as i64],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !has_first {
        return Ok(1);
    }
    let hole: i64 = tx.query_row(
        "SELECT MIN(p.seq) + 1 FROM chain_plays p
         WHERE p.screen = ?1 AND p.chain = ?2 AND NOT EXISTS
             (SELECT 1 FROM chain_plays q
              WHERE q.screen = p.screen AND q.chain = p.chain AND q.seq = p.seq + 1)",
        params![screen, chain as i64],
        |r| r.get(0),
    )?;
    Ok(hole as u64)
}

/// The hashes held at `seqs` (a range, and record 1).
fn held_hashes(
    tx: &Transaction<'_>,
    screen: &str,
    chain: u64,
    from: u64,
    to: u64,
) -> Result<HashMap<u64, String>> {
    let mut held = HashMap::new();
    let mut query = tx.prepare_cached(
        "SELECT seq, hash FROM chain_plays WHERE screen = ?1 AND chain = ?2
         AND seq BETWEEN ?3 AND ?4",
    )?;
    for (lo, hi) in [(1, 1), (from, to)] {
        let rows = query.query_map(
            params![
                screen,
                chain as i64,
                lo.min(i64::MAX as u64) as i64,
                hi.min(i64::MAX as u64) as i64
            ],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
        )?;
        for row in rows {
            let (seq, hash) = row?;
            held.insert(seq, hash);
        }
    }
    Ok(held)
}

fn insert_records(
    tx: &Transaction<'_>,
    screen: &str,
    chain: u64,
    records: &[PlayRecord],
    received_at: &str,
) -> Result<usize> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO chain_plays (screen, chain, seq, scope, notice_id, version,
             started_at, duration_ms, pages_shown, triggered_by, prev, hash, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut stored = 0;
    // Counted here, not by a trigger: one update a batch, not one a record.
    for r in records {
        stored += insert.execute(params![
            screen,
            chain as i64,
            r.seq as i64,
            r.scope,
            r.notice_id,
            r.version as i64,
            r.started_at,
            r.duration_ms as i64,
            r.pages_shown,
            r.trigger.as_str(),
            r.prev,
            r.hash,
            received_at
        ])?;
    }
    tx.execute(
        "UPDATE play_chains SET held = held + ?3 WHERE screen = ?1 AND chain = ?2",
        params![screen, chain as i64, stored as i64],
    )?;
    Ok(stored)
}

impl OfficeStore {
    /// Judges a batch of `screen`'s chain records (in seq order, each
    /// checked in itself by `office::input` first) against the chain held,
    /// and stores it if it continues the chain or begins a new one, in one
    /// transaction. A refusal is recorded as a conflict; nothing of the
    /// batch is stored then.
    pub fn add_chain_plays(
        &mut self,
        screen: &str,
        community: &str,
        batch: &[PlayRecord],
        received_at: OffsetDateTime,
    ) -> Result<PlaysOutcome> {
        let at = rfc3339(received_at.to_offset(time::UtcOffset::UTC));
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let chain = current_chain(&tx, screen)?;
        let before = match chain {
            Some(chain) => extent(&tx, screen, chain)?,
            None => Extent { count: 0, last: 0 },
        };
        let next_seq = match chain {
            Some(chain) => first_missing(&tx, screen, chain, before)?,
            None => 1,
        };
        // The hashes the verdict may ask for, read at once: record 1 (a
        // restart?), the one before the batch (its link) and the batch's own.
        let held = match (chain, batch.first(), batch.last()) {
            (Some(chain), Some(first), Some(last)) => {
                held_hashes(&tx, screen, chain, first.seq.saturating_sub(1), last.seq)?
            }
            _ => HashMap::new(),
        };
        let verdict = judge(batch, next_seq, |seq| held.get(&seq).cloned());
        let outcome = match verdict {
            ChainVerdict::Gap { next_seq } => PlaysOutcome::Gap { next_seq },
            ChainVerdict::Refused(refusal) => {
                let chain = chain.unwrap_or(1);
                let record = batch
                    .iter()
                    .find(|r| r.seq == refusal.seq)
                    .or(batch.first());
                let (hash, json) = record.map_or((String::new(), String::new()), |r| {
                    (
                        r.hash.clone(),
                        serde_json::to_string(r).expect("records serialise"),
                    )
                });
                tx.execute(
                    "INSERT INTO play_conflicts (screen, chain, seq, hash, reason, record,
                         first_at, last_at, times)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1)
                     ON CONFLICT (screen, chain, seq, hash, reason)
                     DO UPDATE SET last_at = excluded.last_at, times = times + 1",
                    params![
                        screen,
                        chain as i64,
                        refusal.seq.min(i64::MAX as u64) as i64,
                        hash,
                        refusal.reason,
                        json,
                        at
                    ],
                )?;
                PlaysOutcome::Refused {
                    reason: refusal.reason,
                }
            }
            ChainVerdict::Continues { .. } if batch.is_empty() => PlaysOutcome::Stored {
                stored: 0,
                next_seq,
                restarted: None,
            },
            ChainVerdict::Continues { .. } => {
                let chain = match chain {
                    Some(chain) => chain,
                    None => {
                        begin_chain(&tx, screen, 1, community, &at)?;
                        1
                    }
                };
                let stored = insert_records(&tx, screen, chain, batch, &at)?;
                let after = Extent {
                    count: before.count + stored as u64,
                    last: before.last.max(batch.last().map_or(0, |r| r.seq)),
                };
                PlaysOutcome::Stored {
                    stored,
                    next_seq: first_missing(&tx, screen, chain, after)?,
                    restarted: None,
                }
            }
            ChainVerdict::Restarts { .. } => {
                let new = chain.map_or(1, |c| c + 1);
                begin_chain(&tx, screen, new, community, &at)?;
                let stored = insert_records(&tx, screen, new, batch, &at)?;
                let after = Extent {
                    count: stored as u64,
                    last: batch.last().map_or(0, |r| r.seq),
                };
                PlaysOutcome::Stored {
                    stored,
                    next_seq: first_missing(&tx, screen, new, after)?,
                    restarted: Some(new),
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Every chain held, by screen and chain number.
    pub fn play_chains(&self) -> Result<Vec<ChainSummary>> {
        let mut query = self.conn.prepare(
            "SELECT c.screen, c.chain, c.community, c.begun_at,
                    (SELECT COUNT(*) FROM chain_plays p WHERE p.screen = c.screen AND p.chain = c.chain),
                    (SELECT COALESCE(MAX(seq), 0) FROM chain_plays p
                     WHERE p.screen = c.screen AND p.chain = c.chain)
             FROM play_chains c ORDER BY c.screen, c.chain",
        )?;
        let rows = query.query_map([], |r| {
            Ok(ChainSummary {
                screen: r.get(0)?,
                chain: r.get::<_, i64>(1)? as u64,
                community: r.get(2)?,
                begun_at: r.get(3)?,
                records: r.get::<_, i64>(4)? as u64,
                last_seq: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The records of one chain, in seq order.
    pub fn chain_records(&self, screen: &str, chain: u64) -> Result<Vec<PlayRecord>> {
        let mut query = self.conn.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM chain_plays WHERE screen = ?1 AND chain = ?2 ORDER BY seq"
        ))?;
        let rows = query.query_map(params![screen, chain as i64], |r| record_of(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The refused batches of every screen, oldest first.
    pub fn play_conflicts(&self) -> Result<Vec<PlayConflict>> {
        let mut query = self.conn.prepare(
            "SELECT screen, chain, seq, reason, record, first_at, last_at, times
             FROM play_conflicts ORDER BY first_at, screen, seq",
        )?;
        let rows = query.query_map([], |r| {
            Ok(PlayConflict {
                screen: r.get(0)?,
                chain: r.get::<_, i64>(1)? as u64,
                seq: r.get::<_, i64>(2)? as u64,
                reason: r.get(3)?,
                record: r.get(4)?,
                first_at: r.get(5)?,
                last_at: r.get(6)?,
                times: r.get::<_, i64>(7)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every chain record of notice `notice_id` (any scope, any version)
    /// that started at `since` or later, by start time.
    pub fn notice_plays(
        &self,
        notice_id: &str,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<NoticePlay>> {
        let mut query = self.conn.prepare(&format!(
            "SELECT p.screen, c.community, p.chain, {RECORD_COLUMNS}
             FROM chain_plays p JOIN play_chains c ON c.screen = p.screen AND c.chain = p.chain
             WHERE p.notice_id = ?1"
        ))?;
        let mut rows = query.query([notice_id])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let play = NoticePlay {
                screen: r.get(0)?,
                community: r.get(1)?,
                chain: r.get::<_, i64>(2)? as u64,
                record: record_of(r, 3)?,
            };
            out.push((parse_time(&play.record.started_at)?, play));
        }
        // Times are compared parsed, as everywhere in this database.
        out.retain(|(at, _)| since.is_none_or(|s| *at >= s));
        out.sort_by(|a, b| (a.0, &a.1.screen).cmp(&(b.0, &b.1.screen)));
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    /// Plays of `notice_id` that screens sent before play chains
    /// (protocol 1.0), kept in the table of that time.
    pub fn legacy_notice_plays(&self, notice_id: &str) -> Result<Vec<LegacyPlay>> {
        let mut query = self.conn.prepare(
            "SELECT screen, community, notice_id, version, started_at, duration_ms
             FROM plays WHERE notice_id = ?1 ORDER BY started_at, screen",
        )?;
        let rows = query.query_map([notice_id], |r| {
            Ok(LegacyPlay {
                screen: r.get(0)?,
                community: r.get(1)?,
                notice_id: r.get(2)?,
                version: r.get::<_, i64>(3)? as u64,
                started_at: r.get(4)?,
                duration_ms: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn begin_chain(
    tx: &Transaction<'_>,
    screen: &str,
    chain: u64,
    community: &str,
    at: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO play_chains (screen, chain, community, begun_at) VALUES (?1, ?2, ?3, ?4)",
        params![screen, chain as i64, community, at],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::plays::GENESIS;

    fn chain(n: u64, duration_ms: u64) -> Vec<PlayRecord> {
        let mut out: Vec<PlayRecord> = Vec::new();
        for i in 1..=n {
            let record = PlayRecord {
                seq: 0,
                scope: "lixia-demo".into(),
                notice_id: format!("n{}", i % 3),
                version: 1,
                started_at: format!("2026-10-08T01:{:02}:{:02}.456Z", i / 60 % 60, i % 60),
                duration_ms,
                pages_shown: 1,
                trigger: Trigger::Rotation,
                prev: String::new(),
                hash: String::new(),
            }
            .sealed_after(out.last());
            out.push(record);
        }
        out
    }

    fn stored(stored: usize, next_seq: u64) -> PlaysOutcome {
        PlaysOutcome::Stored {
            stored,
            next_seq,
            restarted: None,
        }
    }

    #[test]
    fn a_chain_grows_retries_store_nothing_twice_and_conflicts_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        let records = chain(10, 12_000);
        let now = OffsetDateTime::now_utc();
        let mut add = |batch: &[PlayRecord]| {
            store
                .add_chain_plays("lobby-3", "lixia-demo", batch, now)
                .unwrap()
        };
        assert_eq!(add(&records[5..]), PlaysOutcome::Gap { next_seq: 1 });
        assert_eq!(add(&records[..4]), stored(4, 5));
        assert_eq!(add(&records[2..6]), stored(2, 7), "a retry and more");
        assert_eq!(add(&records[8..]), PlaysOutcome::Gap { next_seq: 7 });
        let mut fork = chain(10, 12_000)[5..6].to_vec();
        fork[0].duration_ms = 5;
        fork[0].hash = fork[0].expected_hash();
        let PlaysOutcome::Refused { reason } = add(&fork) else {
            panic!("a fork is refused");
        };
        assert!(reason.contains("forks"), "{reason}");
        assert!(matches!(add(&fork), PlaysOutcome::Refused { .. }));
        assert_eq!(add(&records[6..]), stored(4, 11));
        assert_eq!(store.chain_records("lobby-3", 1).unwrap(), records);
        let conflicts = store.play_conflicts().unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!((conflicts[0].seq, conflicts[0].times), (6, 2));
    }

    #[test]
    fn a_screen_that_begins_again_gets_a_new_chain_and_the_old_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        let (old, new) = (chain(6, 12_000), chain(3, 9_000));
        store
            .add_chain_plays("lobby-3", "lixia-demo", &old, now)
            .unwrap();
        assert_eq!(
            store
                .add_chain_plays("lobby-3", "lixia-demo", &new, now)
                .unwrap(),
            PlaysOutcome::Stored {
                stored: 3,
                next_seq: 4,
                restarted: Some(2)
            }
        );
        // The new chain goes on; the old one is as it was.
        assert_eq!(
            store
                .add_chain_plays("lobby-3", "lixia-demo", &new, now)
                .unwrap(),
            stored(0, 4)
        );
        let chains = store.play_chains().unwrap();
        let summary: Vec<(u64, u64, u64)> = chains
            .iter()
            .map(|c| (c.chain, c.records, c.last_seq))
            .collect();
        assert_eq!(summary, [(1, 6, 6), (2, 3, 3)]);
        assert_eq!(store.chain_records("lobby-3", 1).unwrap(), old);
        assert_eq!(store.chain_records("lobby-3", 2).unwrap()[0].prev, GENESIS);
        let plays = store.notice_plays("n1", None).unwrap();
        assert_eq!(
            plays.len(),
            2 + 1,
            "n1 is records 1 and 4 of the old, 1 of the new"
        );
    }

    #[test]
    fn records_lost_from_the_database_are_asked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.db");
        let mut store = OfficeStore::open(&path).unwrap();
        let now = OffsetDateTime::now_utc();
        let records = chain(20, 12_000);
        store
            .add_chain_plays("lobby-3", "lixia-demo", &records[..15], now)
            .unwrap();
        store
            .conn
            .execute("DELETE FROM chain_plays WHERE seq BETWEEN 5 AND 8", [])
            .unwrap();
        assert_eq!(
            store
                .add_chain_plays("lobby-3", "lixia-demo", &records[15..], now)
                .unwrap(),
            PlaysOutcome::Gap { next_seq: 5 }
        );
        assert_eq!(
            store
                .add_chain_plays("lobby-3", "lixia-demo", &records[4..], now)
                .unwrap(),
            stored(9, 21)
        );
        assert_eq!(store.chain_records("lobby-3", 1).unwrap(), records);
    }

    /// The migration to chains keeps what screens sent before them.
    #[test]
    fn plays_of_protocol_1_0_are_kept_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.db");
        {
            let conn =
                crate::store::open_durable(&path, &super::super::OFFICE_MIGRATIONS[..4]).unwrap();
            conn.execute(
                "INSERT INTO plays VALUES ('lobby-3', 'lixia-demo', 'n1', 3, \
                 '2026-10-08T01:02:03Z', 36000)",
                [],
            )
            .unwrap();
        }
        let store = OfficeStore::open(&path).unwrap();
        let legacy = store.legacy_notice_plays("n1").unwrap();
        assert_eq!(legacy.len(), 1);
        assert_eq!((legacy[0].version, legacy[0].duration_ms), (3, 36_000));
        assert!(store.play_chains().unwrap().is_empty());
    }
}
