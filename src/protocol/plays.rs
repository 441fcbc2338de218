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

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, and a real instant.
fn is_millisecond_utc(s: &str) -> bool {
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
    /// 400: a wrong hash, a broken link, or a held seq with another hash (a
    /// fork). Nothing of the batch is stored.
    Refused(String),
}

/// Judges `batch` (in seq order) against what the office holds for the
/// screen: `held(seq)` is the hash it holds at `seq`, and `next_seq` is one
/// past the last record it holds (1 when it holds none).
pub fn judge(
    batch: &[PlayRecord],
    next_seq: u64,
    held: impl Fn(u64) -> Option<String>,
) -> ChainVerdict {
    let Some(first) = batch.first() else {
        return ChainVerdict::Continues { new: 0, next_seq };
    };
    if batch.len() > MAX_PLAYS_PER_REQUEST {
        return ChainVerdict::Refused(format!(
            "at most {MAX_PLAYS_PER_REQUEST} records per request"
        ));
    }
    for record in batch {
        if let Err(why) = record.check() {
            return ChainVerdict::Refused(why);
        }
    }
    for pair in batch.windows(2) {
        if pair[1].seq != pair[0].seq + 1 || pair[1].prev != pair[0].hash {
            return ChainVerdict::Refused(format!(
                "record {} does not follow record {}",
                pair[1].seq, pair[0].seq
            ));
        }
    }
    if first.seq > next_seq {
        return ChainVerdict::Gap { next_seq };
    }
    // The first record must link to what the office holds before it.
    let link = if first.seq == 1 {
        Some(GENESIS.to_owned())
    } else {
        held(first.seq - 1)
    };
    if link.as_deref() != Some(first.prev.as_str()) {
        return ChainVerdict::Refused(format!(
            "record {} does not link to the chain held",
            first.seq
        ));
    }
    let mut new = 0;
    for record in batch {
        match held(record.seq) {
            Some(hash) if hash == record.hash => {}
            Some(_) => {
                return ChainVerdict::Refused(format!(
                    "record {} forks the chain held",
                    record.seq
                ));
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
            matches!(judge(&[forked], 3, holds(2)), ChainVerdict::Refused(why) if why.contains("forks"))
        );
        let mut tampered = records[2].clone();
        tampered.pages_shown = 9;
        assert!(
            matches!(judge(&[tampered], 3, holds(2)), ChainVerdict::Refused(why) if why.contains("hash"))
        );
        assert!(matches!(
            judge(&[records[0].clone(), records[2].clone()], 1, holds(0)),
            ChainVerdict::Refused(_)
        ));
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
