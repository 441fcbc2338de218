//! What staff and auditors read of the proof-of-play chains the office
//! keeps (`gongkai office plays`): where and when a notice was shown, for
//! how long in all, and whether inside its window; and whether each
//! screen's chain is whole, from record 1 to its last, and agrees with the
//! head the screen last published in its MQTT status, a witness the
//! office's database cannot rewrite.
//!
//! The office's database holds no notices: windows come from notices the
//! office reads back from the broker (retained, as it published them) or
//! from envelope files it keeps. A play whose notice version is in neither
//! says its window is unknown rather than guessing.
//!
//! Reports are built as text here, pure over what was read; the CLI prints
//! them and turns a failed verification into its exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::mqtt::Connect;
use crate::protocol::envelope::Envelope;
use crate::protocol::plays::chain_problems;
use crate::protocol::{Notice, TopicSpace, printable};
use crate::status::StatusMessage;
use crate::store::office::{ChainSummary, NoticePlay, OfficeStore};

use super::broker::OneShotClient;

/// A notice version's window, as the office knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub scope: String,
    pub id: String,
    pub version: u64,
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
}

impl Window {
    pub fn of(notice: &Notice) -> Window {
        Window {
            scope: notice.community.clone(),
            id: notice.id.clone(),
            version: notice.version,
            valid_from: notice.valid_from,
            valid_until: notice.valid_until,
        }
    }
}

/// The window of a notice in an envelope (or bare payload) file.
pub fn window_of_file(path: &std::path::Path) -> anyhow::Result<Window> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let notice = Notice::from_envelope(&bytes)
        .or_else(|_| Notice::from_payload(&bytes))
        .map_err(|e| anyhow::anyhow!("{}: not a notice: {e}", path.display()))?;
    Ok(Window::of(&notice))
}

/// The windows of notice `id` retained on the broker in each of `scopes`
/// (the newest version the office published there).
pub async fn retained_windows(
    connect: &Connect,
    prefix: &str,
    scopes: &[String],
    id: &str,
) -> anyhow::Result<Vec<Window>> {
    let mut client = OneShotClient::connect(connect).await?;
    let mut out = Vec::new();
    for scope in scopes {
        let topic = TopicSpace::new(prefix, scope).notice(id);
        for message in client.retained(&topic).await? {
            let notice = Envelope::parse(&message.payload)
                .and_then(|e| e.payload_bytes())
                .and_then(|p| Notice::from_payload(&p));
            match notice {
                Ok(notice) => out.push(Window::of(&notice)),
                Err(e) => tracing::warn!("the retained {topic} is not a notice: {e}"),
            }
        }
    }
    client.close().await;
    Ok(out)
}

/// The retained status of every screen of `communities`.
pub async fn retained_statuses(
    connect: &Connect,
    prefix: &str,
    communities: &[String],
) -> anyhow::Result<Vec<StatusMessage>> {
    let mut out = Vec::new();
    for community in communities {
        for entry in super::broker::fleet_status(connect, prefix, community).await? {
            if let super::broker::FleetEntry::Read(status) = entry {
                out.push(status);
            }
        }
    }
    Ok(out)
}

fn local(at: OffsetDateTime, offset: time::UtcOffset) -> String {
    let t = at.to_offset(offset);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// `+08:00`.
fn offset_text(offset: time::UtcOffset) -> String {
    let (h, m, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
}

/// `1 h 02 min 03 s`, `4 min 05 s`, `12.5 s`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, _) => format!("{}.{} s", s, ms % 1000 / 100),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, s) => format!("{h} h {m:02} min {s:02} s"),
    }
}

/// Where a play stands against its notice's window.
fn placement(play: &NoticePlay, start: OffsetDateTime, windows: &[Window]) -> String {
    let r = &play.record;
    let Some(w) = windows
        .iter()
        .find(|w| w.scope == r.scope && w.id == r.notice_id && w.version == r.version)
    else {
        return "window unknown".into();
    };
    if start < w.valid_from {
        "BEFORE its window".into()
    } else if start >= w.valid_until {
        "AFTER its window".into()
    } else {
        "inside its window".into()
    }
}

/// The plays of notice `id`: a line per screen, a line per play.
pub fn notice_report(
    store: &OfficeStore,
    id: &str,
    since: Option<OffsetDateTime>,
    windows: &[Window],
    windows_source: &str,
    offset: time::UtcOffset,
) -> anyhow::Result<String> {
    let plays = store.notice_plays(id, since)?;
    let mut out = String::new();
    let total: u64 = plays.iter().map(|p| p.record.duration_ms).sum();
    let screens: BTreeMap<&str, Vec<&NoticePlay>> =
        plays.iter().fold(BTreeMap::new(), |mut by, p| {
            by.entry(p.screen.as_str()).or_default().push(p);
            by
        });
    let since_text = since.map_or(String::new(), |s| format!(" since {}", local(s, offset)));
    if plays.is_empty() {
        writeln!(out, "notice {id}: no plays{since_text}")?;
    } else {
        writeln!(
            out,
            "notice {id}: {} on {}{since_text}, {} on screen in total (times UTC{})",
            count(plays.len(), "play"),
            count(screens.len(), "screen"),
            human_duration(total),
            offset_text(offset)
        )?;
    }
    // The windows of the versions played.
    let mut versions: Vec<(&str, u64)> = plays
        .iter()
        .map(|p| (p.record.scope.as_str(), p.record.version))
        .collect();
    versions.sort();
    versions.dedup();
    for (scope, version) in &versions {
        match windows
            .iter()
            .find(|w| w.scope == *scope && w.id == id && w.version == *version)
        {
            Some(w) => writeln!(
                out,
                "  window of version {version} ({scope}): {} to {}",
                local(w.valid_from, offset),
                local(w.valid_until, offset)
            )?,
            None => writeln!(
                out,
                "  window of version {version} ({scope}): unknown to the office ({windows_source})"
            )?,
        }
    }
    for (screen, plays) in &screens {
        let total: u64 = plays.iter().map(|p| p.record.duration_ms).sum();
        let mut outside = 0;
        let mut unknown = 0;
        let mut lines = String::new();
        for p in plays {
            let start = OffsetDateTime::parse(&p.record.started_at, &Rfc3339)?;
            let placed = placement(p, start, windows);
            match placed.as_str() {
                "inside its window" => {}
                "window unknown" => unknown += 1,
                _ => outside += 1,
            }
            writeln!(
                lines,
                "    {}  v{}  {:>12}  {} page{}  {:<8}  {placed}",
                local(start, offset),
                p.record.version,
                human_duration(p.record.duration_ms),
                p.record.pages_shown,
                if p.record.pages_shown == 1 { "" } else { "s" },
                p.record.trigger.as_str(),
            )?;
        }
        let verdict = match (outside, unknown) {
            (0, 0) => "all inside the window".to_owned(),
            (0, u) => format!("{u} with the window unknown"),
            (o, 0) => format!("{o} OUTSIDE the window"),
            (o, u) => format!("{o} OUTSIDE the window, {u} with the window unknown"),
        };
        writeln!(
            out,
            "screen {screen} ({}): {}, {}; {verdict}",
            plays[0].community,
            count(plays.len(), "play"),
            human_duration(total)
        )?;
        out.push_str(&lines);
    }
    let legacy = store.legacy_notice_plays(id)?;
    if !legacy.is_empty() {
        let total: u64 = legacy.iter().map(|p| p.duration_ms).sum();
        writeln!(
            out,
            "and {} plays sent before play chains (protocol 1.0, not verifiable), {} in total",
            legacy.len(),
            human_duration(total)
        )?;
    }
    Ok(out)
}

/// The outcome of `--verify`: the report, and whether every chain passed.
pub struct Verification {
    pub report: String,
    pub passed: bool,
}

/// Checks every chain held end to end, lists the refused batches, and
/// compares each screen's current chain with the head in its status (when
/// `statuses` were read).
pub fn verify(
    store: &OfficeStore,
    statuses: Option<&[StatusMessage]>,
) -> anyhow::Result<Verification> {
    let chains = store.play_chains()?;
    let conflicts = store.play_conflicts()?;
    let mut out = String::new();
    let mut passed = true;
    let mut by_screen: BTreeMap<&str, Vec<&ChainSummary>> = BTreeMap::new();
    for c in &chains {
        by_screen.entry(c.screen.as_str()).or_default().push(c);
    }
    if chains.is_empty() {
        writeln!(out, "no play chains held")?;
    }
    for (screen, chains) in &by_screen {
        for c in chains {
            let records = store.chain_records(screen, c.chain)?;
            let problems = chain_problems(&records);
            let restart = match c.chain {
                1 => String::new(),
                n => format!(
                    "; begun again at seq 1 on {} (the screen's store was lost), chain {} kept",
                    c.begun_at,
                    n - 1
                ),
            };
            if problems.is_empty() {
                writeln!(
                    out,
                    "ok    {screen} chain {}: records 1 to {}, whole{restart}",
                    c.chain, c.last_seq
                )?;
            } else {
                passed = false;
                writeln!(
                    out,
                    "FAIL  {screen} chain {}: {} records held, last seq {}{restart}",
                    c.chain, c.records, c.last_seq
                )?;
                for p in problems.iter().take(20) {
                    writeln!(out, "        {p}")?;
                }
                if problems.len() > 20 {
                    writeln!(out, "        and {} more problems", problems.len() - 20)?;
                }
            }
        }
        for k in conflicts.iter().filter(|k| k.screen == *screen) {
            passed = false;
            writeln!(
                out,
                "FAIL  {screen} chain {}: a batch from seq {} was refused {} times ({} to {}): {}",
                k.chain,
                k.seq,
                k.times,
                k.first_at,
                k.last_at,
                printable(&k.reason)
            )?;
        }
    }
    let Some(statuses) = statuses else {
        writeln!(
            out,
            "heads in the screens' statuses not compared: pass --broker to read them"
        )?;
        return Ok(Verification {
            report: out,
            passed,
        });
    };
    for status in statuses {
        let screen = status.screen();
        let current = by_screen.get(screen).and_then(|c| c.last().copied());
        let StatusMessage::Online(s) = status else {
            writeln!(
                out,
                "note  {}: offline; its status carries no head",
                printable(screen)
            )?;
            continue;
        };
        let Some(head) = &s.plays else {
            writeln!(
                out,
                "note  {}: its status carries no play chain head",
                printable(screen)
            )?;
            continue;
        };
        let stored_by_screen = head.seq.saturating_sub(head.unsent);
        let line = match current {
            None if stored_by_screen == 0 => format!(
                "note  {}: head seq {} in its status, none sent yet",
                printable(screen),
                head.seq
            ),
            None => {
                passed = false;
                format!(
                    "FAIL  {}: its status counts records through seq {stored_by_screen} as stored, \
                     the office holds none",
                    printable(screen)
                )
            }
            Some(c) => {
                let held = store.chain_records(screen, c.chain)?;
                let at_head = held.iter().find(|r| r.seq == head.seq);
                let through = held
                    .iter()
                    .enumerate()
                    .take_while(|(i, r)| r.seq == *i as u64 + 1)
                    .count() as u64;
                match at_head {
                    Some(r) if r.hash == head.hash => format!(
                        "ok    {screen}: the head in its status (seq {}) is the office's record {}",
                        head.seq, r.seq
                    ),
                    Some(r) => {
                        passed = false;
                        format!(
                            "FAIL  {screen}: its status has record {} with hash {}, the office {} \
                             (a fork, or a new chain not sent yet)",
                            head.seq,
                            printable(&head.hash),
                            r.hash
                        )
                    }
                    None if through >= stored_by_screen => format!(
                        "ok    {screen}: head seq {} in its status, {} not sent yet; the office \
                         holds through {through}",
                        head.seq, head.unsent
                    ),
                    None => {
                        passed = false;
                        format!(
                            "FAIL  {screen}: its status counts records through seq \
                             {stored_by_screen} as stored, the office holds through {through} \
                             (records lost from the office's database)",
                        )
                    }
                }
            }
        };
        writeln!(out, "{line}")?;
        if let Some(reason) = &head.refused {
            writeln!(
                out,
                "        the screen says the office refuses its chain: {}",
                printable(reason)
            )?;
        }
    }
    for screen in by_screen.keys() {
        if !statuses.iter().any(|s| s.screen() == *screen) {
            writeln!(
                out,
                "note  {screen}: no status on the broker to compare with"
            )?;
        }
    }
    Ok(Verification {
        report: out,
        passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(12_500), "12.5 s");
        assert_eq!(human_duration(245_000), "4 min 05 s");
        assert_eq!(human_duration(3_723_000), "1 h 02 min 03 s");
    }
}
