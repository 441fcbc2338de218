//! The proof-of-play chain (PROTOCOL.md section 7, 1.1): each record carries
//! the hash of the one before it, so the office can tell a complete log from
//! one with records removed, changed or reordered. Pure: the records, the
//! exact line that is hashed, and the office's verdict on a batch. Storing
//! and sending them is the screen's and the office's business.

use serde::{Deserialize, Serialize};

use super::sha256_hex;

/// `prev` of record 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records in one request at most.
pub const MAX_PLAYS_PER_REQUEST: usize = 1000;

/// `started_at` as the chain writes it: UTC, three fractional digits, `Z`.
pub fn millisecond_utc(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// What put a notice on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Rotation,
    Touch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Rotation => "rotation",
            Trigger::Touch => "touch",
        }
    }
}

/// One time a notice was on screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayRecord {
    pub seq: u64,
    pub scope: String,
    pub notice_id: String,
    pub version: u64,
    /// UTC with exactly three fractional digits and `Z`.
    pub started_at: String,
    pub duration_ms: u64,
    pub pages_shown: u32,
    pub trigger: Trigger,
    pub prev: String,
    pub hash: String,
}

impl PlayRecord {
    /// `seq|scope|notice_id|version|started_at|duration_ms|pages_shown|trigger|prev`,
    /// the UTF-8 line whose SHA-256 is `hash`.
    pub fn line(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.seq,
            self.scope,
            self.notice_id,
            self.version,
            self.started_at,
            self.duration_ms,
            self.pages_shown,
            self.trigger.as_str(),
            self.prev
        )
    }

    /// The hash this record must carry.
    pub fn expected_hash(&self) -> String {
        sha256_hex(self.line().as_bytes())
    }

    /// Sets `seq`, `prev` and `hash` so that the record follows `previous`
    /// (or starts a chain).
    pub fn sealed_after(mut self, previous: Option<&PlayRecord>) -> PlayRecord {
        self.seq = previous.map_or(1, |p| p.seq + 1);
        self.prev = previous.map_or_else(|| GENESIS.to_owned(), |p| p.hash.clone());
        self.hash = self.expected_hash();
        self
    }

    /// Why the record is malformed in itself, if it is: its fields, its
    /// time's form, its hash over its own line.
    pub fn check(&self) -> Result<(), String> {
        if self.seq == 0 {
            return Err("seq starts at 1".into());
        }
        if !super::is_valid_id(&self.scope) || !super::is_valid_id(&self.notice_id) {
            return Err(format!(
                "record {}: scope or notice_id is not an id",
                self.seq
            ));
        }
        super::check_version("version", self.version)
            .map_err(|e| format!("record {}: {e}", self.seq))?;
        if !is_millisecond_utc(&self.started_at) {
            return Err(format!(
                "record {}: started_at must be UTC with three fractional digits and Z",
                self.seq
            ));
        }
        if !is_hex64(&self.prev) || !is_hex64(&self.hash) {
            return Err(format!(
                "record {}: prev and hash are 64 lowercase hex",
                self.seq
            ));
        }
        if self.hash != self.expected_hash() {
            return Err(format!(
                "record {}: hash does not match its fields",
                self.seq
            ));
        }
        Ok(())
    }
}

/// 64 lowercase hex digits, as `prev` and `hash` are written.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, and a real instant.
pub fn is_millisecond_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[19] == b'.'
        && b[23] == b'Z'
        && b[20..23].iter().all(u8::is_ascii_digit)
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// The office's answer to a batch (section 7, play chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    /// 200: the batch continues the chain; `new` records to store (records
    /// already held with the same hash are not new), and the next seq.
    Continues { new: usize, next_seq: u64 },
    /// 409: the batch starts past `next_seq`; the screen resends from there.
    Gap { next_seq: u64 },
    /// 200 as well: the batch starts a chain at seq 1 where the office holds
    /// another record 1. The screen's store was lost: the office keeps the
    /// chain it held, begins a new one with these `new` records, and
    /// reports the restart.
    Restarts { new: usize, next_seq: u64 },
    /// 400: a wrong hash, a broken link, or a held seq with another hash (a
    /// fork). Nothing of the batch is stored.
    Refused(ChainRefusal),
}

/// Why a batch was refused, and the record at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRefusal {
    pub seq: u64,
    pub reason: String,
}

impl ChainVerdict {
    /// The refusal's reason, if the batch was refused.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            ChainVerdict::Refused(r) => Some(&r.reason),
            _ => None,
        }
    }
}

fn refused(seq: u64, reason: String) -> ChainVerdict {
    ChainVerdict::Refused(ChainRefusal { seq, reason })
}

/// Judges `batch` (in seq order) against what the office holds for the
/// screen's current chain: `held(seq)` is the hash it holds at `seq`, and
/// `next_seq` is the first seq it lacks (1 when it holds none).
///
/// A batch that starts at seq 1 where another record 1 is held is a
/// restart (the screen lost its store and began again), not a fork:
/// nothing later in a chain can be told from a new chain's start, and the
/// protocol keeps both chains. A held seq after 1 with another hash is a
/// fork.
pub fn judge(
    batch: &[PlayRecord],
    next_seq: u64,
    held: impl Fn(u64) -> Option<String>,
) -> ChainVerdict {
    judge_dyn(batch, next_seq, &held)
}

fn judge_dyn(
    batch: &[PlayRecord],
    next_seq: u64,
    held: &dyn Fn(u64) -> Option<String>,
) -> ChainVerdict {
    let Some(first) = batch.first() else {
        return ChainVerdict::Continues { new: 0, next_seq };
    };
    if batch.len() > MAX_PLAYS_PER_REQUEST {
        return refused(
            first.seq,
            format!("at most {MAX_PLAYS_PER_REQUEST} records per request"),
        );
    }
    for record in batch {
        if let Err(why) = record.check() {
            return refused(record.seq, why);
        }
    }
    for pair in batch.windows(2) {
        if pair[1].seq != pair[0].seq + 1 || pair[1].prev != pair[0].hash {
            return refused(
                pair[1].seq,
                format!(
                    "record {} does not follow record {}",
                    pair[1].seq, pair[0].seq
                ),
            );
        }
    }
    if first.seq > next_seq {
        return ChainVerdict::Gap { next_seq };
    }
    if first.seq == 1 && held(1).is_some_and(|hash| hash != first.hash) {
        // The batch is whole in itself and starts a chain (its `prev` was
        // checked against the genesis below, by the judgement of a chain
        // that holds nothing).
        return match judge_dyn(batch, 1, &|_| None) {
            ChainVerdict::Continues { new, next_seq } => ChainVerdict::Restarts { new, next_seq },
            other => other,
        };
    }
    // The first record must link to what the office holds before it.
    let link = if first.seq == 1 {
        Some(GENESIS.to_owned())
    } else {
        held(first.seq - 1)
    };
    if link.as_deref() != Some(first.prev.as_str()) {
        return refused(
            first.seq,
            format!("record {} does not link to the chain held", first.seq),
        );
    }
    let mut new = 0;
    for record in batch {
        match held(record.seq) {
            Some(hash) if hash == record.hash => {}
            Some(_) => {
                return refused(
                    record.seq,
                    format!("record {} forks the chain held", record.seq),
                );
            }
            None => new += 1,
        }
    }
    let last = batch.last().expect("not empty").seq;
    ChainVerdict::Continues {
        new,
        next_seq: next_seq.max(last + 1),
    }
}

/// What is wrong with a chain as the office holds it, from record 1 on:
/// records missing, a record whose hash is not over its own line, a `prev`
/// that is not the hash before it. Empty when the chain is whole.
pub fn chain_problems(records: &[PlayRecord]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected_seq = 1;
    let mut prev: Option<&PlayRecord> = None;
    for record in records {
        if record.seq != expected_seq {
            problems.push(match record.seq.checked_sub(1) {
                Some(before) if before > expected_seq => {
                    format!("records {expected_seq} to {before} are missing")
                }
                Some(_) if record.seq > expected_seq => format!("record {expected_seq} is missing"),
                _ => format!("record {} is out of order", record.seq),
            });
        }
        if let Err(why) = record.check() {
            problems.push(why);
        }
        let link = match prev {
            Some(p) if p.seq + 1 == record.seq => Some(p.hash.as_str()),
            None if record.seq == 1 => Some(GENESIS),
            // After a gap the link cannot be checked.
            _ => None,
        };
        if link.is_some_and(|hash| hash != record.prev) {
            problems.push(format!(
                "record {} does not link to record {}",
                record.seq,
                record.seq - 1
            ));
        }
        expected_seq = record.seq + 1;
        prev = Some(record);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> PlayRecord {
        PlayRecord {
            seq: 0,
            scope: "lixia-demo".into(),
            notice_id: format!("n{i}"),
            version: 1,
            started_at: format!("2026-10-08T01:02:{:02}.456Z", i % 60),
            duration_ms: 12_000,
            pages_shown: 1,
            trigger: Trigger::Rotation,
            prev: String::new(),
            hash: String::new(),
        }
    }

    fn chain(n: u64) -> Vec<PlayRecord> {
        let mut out: Vec<PlayRecord> = Vec::new();
        for i in 1..=n {
            let next = record(i).sealed_after(out.last());
            out.push(next);
        }
        out
    }

    #[test]
    fn a_chain_continues_retries_count_as_stored_and_gaps_and_forks_are_told() {
        let records = chain(5);
        let holds = |upto: u64| {
            let records = records.clone();
            move |seq: u64| (seq <= upto).then(|| records[seq as usize - 1].hash.clone())
        };
        assert_eq!(
            judge(&records[..3], 1, holds(0)),
            ChainVerdict::Continues {
                new: 3,
                next_seq: 4
            }
        );
        // A retry of records held, plus one more.
        assert_eq!(
            judge(&records[1..4], 4, holds(3)),
            ChainVerdict::Continues {
                new: 1,
                next_seq: 5
            }
        );
        assert_eq!(
            judge(&records[3..], 2, holds(1)),
            ChainVerdict::Gap { next_seq: 2 }
        );
        let mut forked = records[1].clone();
        forked.duration_ms = 1;
        forked.hash = forked.expected_hash();
        assert!(
            judge(&[forked], 3, holds(2))
                .refusal()
                .is_some_and(|why| why.contains("forks"))
        );
        let mut tampered = records[2].clone();
        tampered.pages_shown = 9;
        assert!(
            judge(&[tampered], 3, holds(2))
                .refusal()
                .is_some_and(|why| why.contains("hash"))
        );
        assert!(matches!(
            judge(&[records[0].clone(), records[2].clone()], 1, holds(0)),
            ChainVerdict::Refused(_)
        ));
    }

    #[test]
    fn a_new_chain_at_seq_1_is_a_restart_and_a_later_fork_is_refused() {
        let old = chain(5);
        let held = |seq: u64| (seq <= 5).then(|| old[seq as usize - 1].hash.clone());
        let mut new = Vec::new();
        for i in 1..=3u64 {
            let mut r = record(i);
            r.duration_ms = 1000;
            let next = r.sealed_after(new.last());
            new.push(next);
        }
        assert_eq!(
            judge(&new, 6, held),
            ChainVerdict::Restarts {
                new: 3,
                next_seq: 4
            }
        );
        // A new record 2 after the held record 1: a fork, not a restart.
        let mut fork = record(2);
        fork.duration_ms = 1;
        let fork = fork.sealed_after(Some(&old[0]));
        assert!(judge(&[fork], 6, held).refusal().unwrap().contains("forks"));
        // A restart whose own records do not link is refused like any.
        let mut broken = new.clone();
        broken[0].prev = old[4].hash.clone();
        broken[0].hash = broken[0].expected_hash();
        assert!(judge(&broken, 6, held).refusal().is_some());
    }

    #[test]
    fn chain_problems_name_gaps_wrong_hashes_and_broken_links() {
        let records = chain(8);
        assert!(chain_problems(&records).is_empty());
        let mut holed = records.clone();
        holed.drain(2..5);
        assert_eq!(chain_problems(&holed), ["records 3 to 5 are missing"]);
        let mut tampered = records.clone();
        tampered[6].duration_ms += 1;
        let problems = chain_problems(&tampered);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("record 7: hash"), "{problems:?}");
        let mut relinked = records.clone();
        relinked[3].prev = GENESIS.into();
        relinked[3].hash = relinked[3].expected_hash();
        let problems = chain_problems(&relinked);
        assert!(problems.contains(&"record 4 does not link to record 3".to_owned()));
        // Record 4's new hash no longer is record 5's prev.
        assert!(problems.contains(&"record 5 does not link to record 4".to_owned()));
        assert_eq!(chain_problems(&records[1..]), ["record 1 is missing"]);
    }

    #[test]
    fn started_at_has_exactly_three_fractional_digits_and_z() {
        assert!(is_millisecond_utc("2026-10-08T01:02:03.456Z"));
        for bad in [
            "2026-10-08T01:02:03Z",
            "2026-10-08T01:02:03.45Z",
            "2026-10-08T09:02:03.456+08:00",
            "2026-13-08T01:02:03.456Z",
        ] {
            assert!(!is_millisecond_utc(bad), "{bad}");
        }
    }
}
