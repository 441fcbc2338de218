//! What to show and when (PROTOCOL.md section 4). Pure: no I/O, no clock;
//! every function takes `now` as a parameter so tests run on virtual time.

use std::collections::HashSet;

use time::OffsetDateTime;

use crate::protocol::{Category, Notice, Priority, Status};

/// What the schedule needs to know of a notice: the head (highest accepted
/// version) of one id. Built by the store from its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The scope that published it (section 3.7): the home community or one
    /// above it. Notices are identified by (scope, id).
    pub scope: String,
    pub id: String,
    pub version: u64,
    pub category: Category,
    pub priority: Priority,
    pub status: Status,
    pub title: String,
    /// 公开主体: shown beside notices of an upper scope.
    pub publisher: String,
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
    pub screens: Vec<String>,
    /// Upper scopes: the communities whose screens show it (empty: all).
    pub communities: Vec<String>,
}

/// A notice version, as the rotation names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub scope: String,
    pub id: String,
    pub version: u64,
}

/// Who looks: a screen and the community it belongs to. A notice targets it
/// when neither its `screens` nor its `communities` exclude it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    pub screen: String,
    pub community: String,
}

impl Audience {
    pub fn new(screen: &str, community: &str) -> Self {
        Self {
            screen: screen.to_owned(),
            community: community.to_owned(),
        }
    }
}

impl Item {
    /// What the schedule keeps of a notice payload.
    pub fn of(n: &Notice) -> Item {
        Item {
            scope: n.community.clone(),
            id: n.id.clone(),
            version: n.version,
            category: n.category,
            priority: n.priority,
            status: n.status,
            title: n.title.clone(),
            publisher: n.publisher.clone(),
            valid_from: n.valid_from,
            valid_until: n.valid_until,
            screens: n.screens.clone(),
            communities: n.communities.clone(),
        }
    }

    pub fn key(&self) -> Key {
        Key {
            scope: self.scope.clone(),
            id: self.id.clone(),
            version: self.version,
        }
    }

    pub fn targets(&self, audience: &Audience) -> bool {
        (self.screens.is_empty() || self.screens.contains(&audience.screen))
            && (self.communities.is_empty() || self.communities.contains(&audience.community))
    }

    /// Active, addressed to this screen and inside its window (from inclusive,
    /// until exclusive).
    pub fn is_active(&self, screen: &Audience, now: OffsetDateTime) -> bool {
        self.status == Status::Active
            && self.targets(screen)
            && self.valid_from <= now
            && now < self.valid_until
    }
}

/// The active set in display order: by category as residents know them, then
/// newest window first, then id, so every screen of a community agrees.
pub fn active_set<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    screen: &Audience,
    now: OffsetDateTime,
) -> Vec<&'a Item> {
    let mut active: Vec<&Item> = items
        .into_iter()
        .filter(|i| i.is_active(screen, now))
        .collect();
    active.sort_by(|a, b| {
        a.category
            .cmp(&b.category)
            .then(b.valid_from.cmp(&a.valid_from))
            .then(a.id.cmp(&b.id))
            .then(a.scope.cmp(&b.scope))
    });
    active
}

/// The next instant after `now` at which the active set changes by the clock
/// alone: a window of an active notice for this screen opens or closes.
pub fn next_deadline<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    screen: &Audience,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    items
        .into_iter()
        .filter(|i| i.status == Status::Active && i.targets(screen))
        .flat_map(|i| [i.valid_from, i.valid_until])
        .filter(|t| *t > now)
        .min()
}

/// Rotation state: which notice comes next. `high` notices come round twice
/// per cycle, `normal` once; an `urgent` notice interrupts as soon as it is
/// first seen and then takes at least every other slot.
#[derive(Debug, Default)]
pub struct Rotation {
    cursor: usize,
    urgent_cursor: usize,
    last_was_urgent: bool,
    /// Urgent versions already shown once; one not in here interrupts.
    announced: HashSet<Key>,
}

impl Rotation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the current slot should be cut short: an urgent notice has
    /// arrived that has not been shown yet.
    pub fn should_interrupt(&self, active: &[&Item]) -> bool {
        active
            .iter()
            .any(|i| i.priority == Priority::Urgent && !self.announced.contains(&i.key()))
    }

    /// The notice for the next slot, or `None` when nothing is active.
    pub fn next(&mut self, active: &[&Item]) -> Option<Key> {
        self.announced
            .retain(|k| active.iter().any(|i| i.key() == *k));
        let urgent: Vec<&Item> = active
            .iter()
            .copied()
            .filter(|i| i.priority == Priority::Urgent)
            .collect();
        if let Some(fresh) = urgent.iter().find(|i| !self.announced.contains(&i.key())) {
            self.announced.insert(fresh.key());
            self.last_was_urgent = true;
            return Some(fresh.key());
        }
        let cycle = cycle(active);
        if !urgent.is_empty() && (!self.last_was_urgent || cycle.is_empty()) {
            let item = urgent[self.urgent_cursor % urgent.len()];
            self.urgent_cursor = self.urgent_cursor.wrapping_add(1);
            self.last_was_urgent = true;
            return Some(item.key());
        }
        if cycle.is_empty() {
            return None;
        }
        let item = cycle[self.cursor % cycle.len()];
        self.cursor = (self.cursor % cycle.len()) + 1;
        self.last_was_urgent = false;
        Some(item.key())
    }
}

/// One cycle of the non-urgent rotation: the high notices, the first half of
/// the normal ones, the high notices again, the second half.
fn cycle<'a>(active: &[&'a Item]) -> Vec<&'a Item> {
    let high: Vec<&Item> = active
        .iter()
        .copied()
        .filter(|i| i.priority == Priority::High)
        .collect();
    let normal: Vec<&Item> = active
        .iter()
        .copied()
        .filter(|i| i.priority == Priority::Normal)
        .collect();
    if high.is_empty() || normal.is_empty() {
        return high.into_iter().chain(normal).collect();
    }
    let half = normal.len().div_ceil(2);
    high.iter()
        .chain(&normal[..half])
        .chain(&high)
        .chain(&normal[half..])
        .copied()
        .collect()
}

/// Why a notice is in the archive rather than the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveMark {
    /// A newer signed version withdrew it.
    Withdrawn,
    /// Its window has closed.
    Expired,
}

impl ArchiveMark {
    /// The mark as residents read it on the kiosk.
    pub fn label_zh(self) -> &'static str {
        match self {
            ArchiveMark::Withdrawn => "已撤回",
            ArchiveMark::Expired => "已过期",
        }
    }
}

/// Whether `item` belongs in the archive at `now`, and why. A withdrawal
/// wins over expiry: it is the stronger statement.
pub fn archive_mark(item: &Item, now: OffsetDateTime) -> Option<ArchiveMark> {
    if item.status == Status::Withdrawn {
        Some(ArchiveMark::Withdrawn)
    } else if item.valid_until <= now {
        Some(ArchiveMark::Expired)
    } else {
        None
    }
}

/// The notices of this screen no longer shown that residents may still look
/// up (往期公开): withdrawn, or past their window. Newest window first, then id.
pub fn archive<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    screen: &Audience,
    now: OffsetDateTime,
) -> Vec<&'a Item> {
    let mut out: Vec<&Item> = items
        .into_iter()
        .filter(|i| i.targets(screen) && archive_mark(i, now).is_some())
        .collect();
    out.sort_by(|a, b| b.valid_until.cmp(&a.valid_until).then(a.id.cmp(&b.id)));
    out
}

/// The urgent notice the banner names on every view: the first active urgent
/// notice in display order, so every screen of a community names the same one.
pub fn urgent_banner<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    screen: &Audience,
    now: OffsetDateTime,
) -> Option<&'a Item> {
    active_set(items, screen, now)
        .into_iter()
        .find(|i| i.priority == Priority::Urgent)
}

/// Characters a page may hold and still be read in the base dwell time.
const PAGE_READ_CHARS: usize = 120;
/// Each further this many characters adds a second.
const CHARS_PER_EXTRA_SECOND: usize = 15;

/// How long a page of `chars` characters stays on screen: `base` for a light
/// page, a second more for every 15 characters beyond 120 (elderly residents
/// read slowly from two metres), and never more than three times `base`.
pub fn page_dwell(base: std::time::Duration, chars: usize) -> std::time::Duration {
    let extra = chars.saturating_sub(PAGE_READ_CHARS) / CHARS_PER_EXTRA_SECOND;
    (base + std::time::Duration::from_secs(extra as u64)).min(base * 3)
}

/// A daily window of quiet hours (a power schedule), in China time
/// (UTC+8, the clock residents read): the screen is dark from `start` until
/// `end`, minutes after midnight; `end < start` runs across midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietWindow {
    pub start: u16,
    pub end: u16,
}

const CHINA: time::UtcOffset = match time::UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => panic!("UTC+8 is an offset"),
};
const DAY_MINUTES: u16 = 24 * 60;

impl QuietWindow {
    /// `"23:00-06:00"`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let minutes = |part: &str| -> Option<u16> {
            let (h, m) = part.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not \"HH:MM-HH:MM\""))?;
        match (minutes(a), minutes(b)) {
            (Some(start), Some(end)) if start != end => Ok(Self { start, end }),
            (Some(_), Some(_)) => Err(format!("{text:?} starts and ends at the same time")),
            _ => Err(format!("{text:?} is not \"HH:MM-HH:MM\" (00:00 to 23:59)")),
        }
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Minutes after midnight, China time, and the instant of that midnight.
fn china_minute(now: OffsetDateTime) -> (u16, OffsetDateTime) {
    let local = now.to_offset(CHINA);
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    (minute, local.replace_time(time::Time::MIDNIGHT))
}

/// Whether `now` falls in a quiet window.
pub fn is_quiet(windows: &[QuietWindow], now: OffsetDateTime) -> bool {
    let (minute, _) = china_minute(now);
    windows.iter().any(|w| w.contains(minute))
}

/// The next instant after `now` at which quietness may change: the next
/// start or end of any window, at most a day ahead.
pub fn next_quiet_change(windows: &[QuietWindow], now: OffsetDateTime) -> Option<OffsetDateTime> {
    let (_, midnight) = china_minute(now);
    windows
        .iter()
        .flat_map(|w| [w.start, w.end])
        .flat_map(|m| {
            [0, 1].map(|day| midnight + time::Duration::minutes(i64::from(m + day * DAY_MINUTES)))
        })
        .filter(|t| *t > now)
        .min()
}

/// What the screen does with its display (the status's `display`): dark in
/// quiet hours unless an urgent notice is active, which lights it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Display {
    #[default]
    On,
    Quiet,
}

impl Display {
    pub fn as_str(self) -> &'static str {
        match self {
            Display::On => "on",
            Display::Quiet => "quiet",
        }
    }
}

/// The display's state at `now` for this active set.
pub fn display_state(windows: &[QuietWindow], active: &[&Item], now: OffsetDateTime) -> Display {
    let urgent = active.iter().any(|i| i.priority == Priority::Urgent);
    if is_quiet(windows, now) && !urgent {
        Display::Quiet
    } else {
        Display::On
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-10-08 00:00 +08:00);

    fn aud(screen: &str) -> Audience {
        Audience::new(screen, "c")
    }

    fn item(id: &str, priority: Priority, from_h: i64, until_h: i64) -> Item {
        Item {
            scope: "c".into(),
            id: id.into(),
            version: 1,
            category: Category::Affairs,
            priority,
            status: Status::Active,
            title: id.into(),
            publisher: String::new(),
            valid_from: T0 + Duration::hours(from_h),
            valid_until: T0 + Duration::hours(until_h),
            screens: vec![],
            communities: vec![],
        }
    }

    fn ids(active: &[&Item]) -> Vec<String> {
        active.iter().map(|i| i.id.clone()).collect()
    }

    #[test]
    fn windows_open_and_close_on_the_clock_alone() {
        let items = vec![
            item("now", Priority::Normal, -1, 1),
            item("later", Priority::Normal, 2, 3),
            item("past", Priority::Normal, -5, -1),
        ];
        assert_eq!(ids(&active_set(&items, &aud("s"), T0)), ["now"]);
        assert_eq!(
            next_deadline(&items, &aud("s"), T0),
            Some(T0 + Duration::hours(1))
        );
        let t = T0 + Duration::hours(1);
        assert!(
            active_set(&items, &aud("s"), t).is_empty(),
            "until is exclusive"
        );
        assert_eq!(
            next_deadline(&items, &aud("s"), t),
            Some(T0 + Duration::hours(2))
        );
        assert_eq!(
            ids(&active_set(&items, &aud("s"), T0 + Duration::hours(2))),
            ["later"]
        );
        assert_eq!(
            next_deadline(&items, &aud("s"), T0 + Duration::hours(3)),
            None
        );
    }

    #[test]
    fn quiet_hours_run_across_midnight_in_china_time() {
        let night = QuietWindow::parse("23:00-06:00").unwrap();
        let lunch = QuietWindow::parse("12:00-13:30").unwrap();
        let windows = [night, lunch];
        let at = |h: u8, m: u8| {
            time::macros::datetime!(2026-12-01 00:00 +08:00)
                .replace_time(time::Time::from_hms(h, m, 0).unwrap())
        };
        assert!(!is_quiet(&windows, at(22, 59)));
        assert!(is_quiet(&windows, at(23, 0)));
        assert!(is_quiet(&windows, at(0, 30)));
        assert!(is_quiet(&windows, at(5, 59)));
        assert!(!is_quiet(&windows, at(6, 0)), "the end is exclusive");
        assert!(is_quiet(&windows, at(12, 45)));
        // The same instant written in UTC: 15:30Z is 23:30 in China.
        assert!(is_quiet(
            &windows,
            time::macros::datetime!(2026-12-01 15:30 UTC)
        ));
        assert_eq!(next_quiet_change(&windows, at(22, 0)), Some(at(23, 0)));
        assert_eq!(
            next_quiet_change(&windows, at(23, 30)),
            Some(at(6, 0) + Duration::days(1)),
            "across midnight"
        );
        assert_eq!(next_quiet_change(&windows, at(6, 0)), Some(at(12, 0)));
        assert_eq!(next_quiet_change(&[], at(6, 0)), None);
        for bad in [
            "23:00",
            "24:00-06:00",
            "7:00-08:00",
            "08:00-08:00",
            "aa:bb-cc:dd",
        ] {
            assert!(QuietWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_urgent_notice_lights_a_quiet_screen() {
        let windows = [QuietWindow::parse("23:00-06:00").unwrap()];
        let t = time::macros::datetime!(2026-12-01 02:00 +08:00);
        let normal = Item {
            valid_from: t - Duration::hours(1),
            valid_until: t + Duration::hours(1),
            ..item("n", Priority::Normal, 0, 1)
        };
        let urgent = Item {
            priority: Priority::Urgent,
            id: "u".into(),
            ..normal.clone()
        };
        assert_eq!(display_state(&windows, &[&normal], t), Display::Quiet);
        assert_eq!(display_state(&windows, &[&normal, &urgent], t), Display::On);
        assert_eq!(
            display_state(&windows, &[&normal], t + Duration::hours(5)),
            Display::On
        );
    }

    #[test]
    fn an_upper_scopes_notice_targets_the_communities_it_names() {
        let mut street = item("street-all", Priority::Normal, -1, 1);
        street.scope = "yanshan-street".into();
        let mut listed = street.clone();
        listed.id = "street-listed".into();
        listed.communities = vec!["other".into(), "c".into()];
        let mut others = street.clone();
        others.id = "street-others".into();
        others.communities = vec!["other".into()];
        let items = [street, listed, others];
        assert_eq!(
            ids(&active_set(&items, &aud("s"), T0)),
            ["street-all", "street-listed"]
        );
        let elsewhere = Audience::new("s", "other");
        assert_eq!(active_set(&items, &elsewhere, T0).len(), 3);
    }

    #[test]
    fn withdrawn_and_other_screens_notices_are_not_shown() {
        let mut withdrawn = item("w", Priority::Normal, -1, 1);
        withdrawn.status = Status::Withdrawn;
        let mut elsewhere = item("e", Priority::Normal, -1, 1);
        elsewhere.screens = vec!["lobby-2".into()];
        let mut here = item("h", Priority::Normal, -1, 1);
        here.screens = vec!["lobby-1".into(), "lobby-2".into()];
        let items = [withdrawn, elsewhere, here];
        assert_eq!(ids(&active_set(&items, &aud("lobby-1"), T0)), ["h"]);
        assert_eq!(ids(&active_set(&items, &aud("lobby-2"), T0)), ["e", "h"]);
    }

    #[test]
    fn display_order_is_by_category_then_newest() {
        let mut finance = item("f", Priority::Normal, -1, 1);
        finance.category = Category::Finance;
        let old = item("old", Priority::Normal, -3, 1);
        let new = item("new", Priority::Normal, -2, 1);
        let items = [finance, old, new];
        assert_eq!(ids(&active_set(&items, &aud("s"), T0)), ["new", "old", "f"]);
    }

    fn run(rotation: &mut Rotation, active: &[&Item], slots: usize) -> Vec<String> {
        (0..slots)
            .filter_map(|_| rotation.next(active))
            .map(|k| k.id)
            .collect()
    }

    #[test]
    fn high_notices_come_round_twice_as_often() {
        let items = [
            item("a", Priority::Normal, -1, 1),
            item("b", Priority::Normal, -1, 1),
            item("c", Priority::Normal, -1, 1),
            item("h", Priority::High, -1, 1),
        ];
        let active = active_set(&items, &aud("s"), T0);
        let shown = run(&mut Rotation::new(), &active, 50);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &shown {
            *counts.entry(id).or_default() += 1;
        }
        assert_eq!(counts["h"], 20);
        for id in ["a", "b", "c"] {
            assert_eq!(counts[id], 10, "{id}");
        }
        assert!(!shown.windows(2).any(|w| w[0] == w[1]), "{shown:?}");
    }

    #[test]
    fn urgent_interrupts_then_takes_every_other_slot() {
        let mut items = vec![
            item("a", Priority::Normal, -1, 1),
            item("b", Priority::Normal, -1, 1),
        ];
        let mut rotation = Rotation::new();
        assert_eq!(
            run(&mut rotation, &active_set(&items, &aud("s"), T0), 3),
            ["a", "b", "a"]
        );

        items.push(item("water", Priority::Urgent, -1, 1));
        let active = active_set(&items, &aud("s"), T0);
        assert!(rotation.should_interrupt(&active));
        assert_eq!(rotation.next(&active).unwrap().id, "water", "shown at once");
        assert!(!rotation.should_interrupt(&active));
        let shown = run(&mut rotation, &active, 8);
        for pair in shown.chunks(2) {
            assert!(pair.contains(&"water".to_string()), "{shown:?}");
        }
        assert!(shown.contains(&"a".to_string()) && shown.contains(&"b".to_string()));

        // Expired: the rotation goes back to normal.
        let later = T0 + Duration::hours(2);
        items[2].valid_until = T0 + Duration::minutes(90);
        items[0].valid_until = later + Duration::hours(1);
        items[1].valid_until = later + Duration::hours(1);
        let active = active_set(&items, &aud("s"), later);
        assert!(!run(&mut rotation, &active, 4).contains(&"water".to_string()));
    }

    #[test]
    fn a_new_version_of_an_urgent_notice_interrupts_again() {
        let mut items = vec![
            item("a", Priority::Normal, -1, 1),
            item("u", Priority::Urgent, -1, 1),
        ];
        let mut rotation = Rotation::new();
        run(&mut rotation, &active_set(&items, &aud("s"), T0), 3);
        assert!(!rotation.should_interrupt(&active_set(&items, &aud("s"), T0)));
        items[1].version = 2;
        assert!(rotation.should_interrupt(&active_set(&items, &aud("s"), T0)));
    }

    #[test]
    fn only_urgent_or_nothing() {
        let items = [item("u", Priority::Urgent, -1, 1)];
        let mut rotation = Rotation::new();
        assert_eq!(
            run(&mut rotation, &active_set(&items, &aud("s"), T0), 3),
            ["u", "u", "u"]
        );
        assert_eq!(rotation.next(&[]), None);
    }

    #[test]
    fn the_archive_marks_withdrawn_and_expired_notices_newest_first() {
        let current = item("current", Priority::Normal, -1, 1);
        let mut withdrawn = item("withdrawn", Priority::Normal, -1, 5);
        withdrawn.status = Status::Withdrawn;
        let older = item("older", Priority::Normal, -10, -5);
        let newer = item("newer", Priority::Normal, -10, -2);
        let mut elsewhere = item("elsewhere", Priority::Normal, -10, -1);
        elsewhere.screens = vec!["lobby-2".into()];
        let items = [current, withdrawn, older, newer, elsewhere];
        assert_eq!(
            ids(&archive(&items, &aud("lobby-1"), T0)),
            ["withdrawn", "newer", "older"]
        );
        assert_eq!(archive_mark(&items[0], T0), None);
        assert_eq!(archive_mark(&items[1], T0), Some(ArchiveMark::Withdrawn));
        assert_eq!(archive_mark(&items[2], T0), Some(ArchiveMark::Expired));
        assert_eq!(ArchiveMark::Withdrawn.label_zh(), "已撤回");
        assert_eq!(ArchiveMark::Expired.label_zh(), "已过期");
        // The end of a window is exclusive: at `valid_until` it has expired.
        let at_end = T0 + Duration::hours(1);
        assert_eq!(archive_mark(&items[0], at_end), Some(ArchiveMark::Expired));
        // A withdrawn notice says so even once its window has closed too.
        let later = T0 + Duration::hours(6);
        assert_eq!(archive_mark(&items[1], later), Some(ArchiveMark::Withdrawn));
    }

    #[test]
    fn the_banner_names_the_first_active_urgent_notice() {
        let mut items = vec![
            item("normal", Priority::Normal, -1, 1),
            item("later", Priority::Urgent, 1, 2),
        ];
        assert_eq!(
            urgent_banner(&items, &aud("s"), T0),
            None,
            "none active yet"
        );
        items.push(item("water", Priority::Urgent, -1, 1));
        let mut gas = item("gas", Priority::Urgent, -2, 1);
        gas.category = Category::Services;
        items.push(gas);
        // Display order: affairs before services.
        assert_eq!(urgent_banner(&items, &aud("s"), T0).unwrap().id, "water");
        items[2].status = Status::Withdrawn;
        assert_eq!(urgent_banner(&items, &aud("s"), T0).unwrap().id, "gas");
        assert_eq!(
            urgent_banner(&items, &aud("s"), T0 + Duration::hours(2)),
            None
        );
    }

    #[test]
    fn denser_pages_stay_longer_up_to_three_times() {
        use std::time::Duration;
        let base = Duration::from_secs(12);
        assert_eq!(page_dwell(base, 0), base);
        assert_eq!(page_dwell(base, 120), base);
        assert_eq!(page_dwell(base, 135), Duration::from_secs(13));
        assert_eq!(page_dwell(base, 420), Duration::from_secs(32));
        assert_eq!(page_dwell(base, 10_000), Duration::from_secs(36));
    }
}
