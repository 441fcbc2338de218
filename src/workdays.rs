//! Working days (工作日): a `Calendar` of weekends, listed holidays and
//! listed make-up working days (调休), and the arithmetic the office's reply
//! deadline needs. The kiosk promises residents an answer within
//! `protocol::feedback::REPLY_WORKING_DAYS` working days, and China's
//! holidays are rearranged every year by the State Council, so calendar
//! days would be wrong by up to a week around 春节 and 国庆.
//!
//! Pure: no I/O and no clock. Dates are passed in, as China dates (UTC+8,
//! `china_date`); calendars are parsed from text that the caller read (the
//! national one, `config/holidays/cn.toml`, is compiled in).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde::Deserialize;
use time::{Date, OffsetDateTime, UtcOffset, Weekday};

/// China Standard Time, which every date of a calendar is in.
pub const CHINA: UtcOffset = time::macros::offset!(+8);

/// The date in China at `t`.
pub fn china_date(t: OffsetDateTime) -> Date {
    t.to_offset(CHINA).date()
}

/// The national calendar, as shipped in the repository.
const NATIONAL: &str = include_str!("../config/holidays/cn.toml");

static NATIONAL_CALENDAR: LazyLock<Calendar> = LazyLock::new(|| {
    Calendar::from_toml(NATIONAL).expect("config/holidays/cn.toml is checked by a unit test")
});

/// Which days are working days: Monday to Friday, except listed holidays,
/// plus listed make-up working days. A year the calendar does not list
/// counts weekends only (`covers` says which years it lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
    working_days: BTreeSet<Date>,
    years: BTreeSet<i32>,
}

impl Default for Calendar {
    /// The national calendar.
    fn default() -> Self {
        Calendar::national()
    }
}

/// The file format: one table per year.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[serde(default)]
    year: Vec<YearFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    working_days: Vec<String>,
}

impl Calendar {
    /// The State Council's calendar (2026, and 2027's statutory holidays
    /// until its arrangement is published).
    pub fn national() -> Calendar {
        NATIONAL_CALENDAR.clone()
    }

    /// Saturdays and Sundays off, nothing else.
    pub fn weekends_only() -> Calendar {
        Calendar {
            holidays: BTreeSet::new(),
            working_days: BTreeSet::new(),
            years: BTreeSet::new(),
        }
    }

    /// Parses a calendar in the format of `config/holidays/cn.toml`; every
    /// problem is reported at once, joined by "; ".
    pub fn from_toml(text: &str) -> Result<Calendar, String> {
        let file: CalendarFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut calendar = Calendar::weekends_only();
        let mut problems = Vec::new();
        let mut seen = BTreeMap::new();
        for year in &file.year {
            if seen.insert(year.year, ()).is_some() {
                problems.push(format!("year {} is listed twice", year.year));
            }
            calendar.years.insert(year.year);
            for entry in &year.holidays {
                match dates_of(entry, year.year) {
                    Ok(dates) => calendar.holidays.extend(dates),
                    Err(p) => problems.push(p),
                }
            }
            for entry in &year.working_days {
                match dates_of(entry, year.year) {
                    Ok(dates) => {
                        for date in dates {
                            if !is_weekend(date) {
                                problems.push(format!(
                                    "{date} is a {} and a working day anyway: a make-up working day (调休) is a Saturday or Sunday",
                                    date.weekday()
                                ));
                            }
                            calendar.working_days.insert(date);
                        }
                    }
                    Err(p) => problems.push(p),
                }
            }
        }
        for both in calendar.holidays.intersection(&calendar.working_days) {
            problems.push(format!("{both} is both a holiday and a working day"));
        }
        if problems.is_empty() {
            Ok(calendar)
        } else {
            Err(problems.join("; "))
        }
    }

    /// Whether the calendar lists `year`'s holidays: outside such a year,
    /// only weekends are off.
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    pub fn is_working_day(&self, date: Date) -> bool {
        if self.working_days.contains(&date) {
            true
        } else if self.holidays.contains(&date) {
            false
        } else {
            !is_weekend(date)
        }
    }

    /// The `n`th working day after `date` (`date` itself for 0). The day
    /// counted from is never counted, whether or not it is a working day,
    /// as periods in days are counted in Chinese law (民法典 第二百零一条:
    /// 开始的当日不计入).
    pub fn add_working_days(&self, date: Date, n: u32) -> Date {
        let mut day = date;
        let mut left = n;
        while left > 0 {
            let Some(next) = day.next_day() else {
                return day;
            };
            day = next;
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        day
    }

    /// The working days after `from` up to and including `to`; negative
    /// when `to` is before `from`. `working_days_between(d,
    /// add_working_days(d, n))` is `n`.
    pub fn working_days_between(&self, from: Date, to: Date) -> i64 {
        if to < from {
            return -self.working_days_between(to, from);
        }
        let mut count = 0;
        let mut day = from;
        while day < to {
            let Some(next) = day.next_day() else { break };
            day = next;
            if self.is_working_day(day) {
                count += 1;
            }
        }
        count
    }
}

fn is_weekend(date: Date) -> bool {
    matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The dates of an entry, "YYYY-MM-DD" or "YYYY-MM-DD..YYYY-MM-DD", which
/// must lie in `year`.
fn dates_of(entry: &str, year: i32) -> Result<Vec<Date>, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let parse = |text: &str| {
        Date::parse(text.trim(), format)
            .map_err(|_| format!("{entry:?} is not a date YYYY-MM-DD or a range of two"))
    };
    let (first, last) = match entry.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(entry)?, parse(entry)?),
    };
    if first > last {
        return Err(format!("{entry:?} ends before it starts"));
    }
    if first.year() != year || last.year() != year {
        return Err(format!("{entry:?} is listed under year {year}"));
    }
    let mut out = vec![first];
    let mut day = first;
    while day < last {
        day = day.next_day().expect("before `last`, so not the last date");
        out.push(day);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_national_calendar_parses_and_lists_2026_and_2027() {
        let cn = Calendar::from_toml(NATIONAL).unwrap();
        assert!(cn.covers(2026) && cn.covers(2027) && !cn.covers(2028));
        assert_eq!(cn, Calendar::national());
        assert_eq!(Calendar::default(), cn);
        // 2026: 33 days of holidays, six make-up days, each a weekend day
        // (from_toml refuses any other).
        let in_2026 = |set: &BTreeSet<Date>| set.iter().filter(|d| d.year() == 2026).count();
        assert_eq!(in_2026(&cn.holidays), 3 + 9 + 3 + 5 + 3 + 3 + 7);
        assert_eq!(in_2026(&cn.working_days), 6);
        // 2027's statutory holidays, no arrangement yet.
        assert_eq!(cn.holidays.iter().filter(|d| d.year() == 2027).count(), 13);
        assert!(!cn.is_working_day(date!(2027 - 02 - 08)), "初三, a Monday");
    }

    #[test]
    fn a_week_with_a_weekend() {
        let cn = Calendar::national();
        // March 2026 has no holiday: Friday 6th to Friday 13th.
        let friday = date!(2026 - 03 - 06);
        assert!(cn.is_working_day(friday));
        assert!(!cn.is_working_day(date!(2026 - 03 - 07)));
        assert!(!cn.is_working_day(date!(2026 - 03 - 08)));
        assert_eq!(cn.add_working_days(friday, 0), friday);
        assert_eq!(cn.add_working_days(friday, 1), date!(2026 - 03 - 09));
        assert_eq!(cn.add_working_days(friday, 5), date!(2026 - 03 - 13));
        // Counted from a Saturday: the next Monday is the first.
        assert_eq!(
            cn.add_working_days(date!(2026 - 03 - 07), 1),
            date!(2026 - 03 - 09)
        );
        assert_eq!(cn.working_days_between(friday, date!(2026 - 03 - 13)), 5);
        assert_eq!(cn.working_days_between(date!(2026 - 03 - 13), friday), -5);
        assert_eq!(cn.working_days_between(friday, friday), 0);
    }

    #[test]
    fn spring_festival_2026_with_its_make_up_saturdays() {
        let cn = Calendar::national();
        assert!(cn.is_working_day(date!(2026 - 02 - 14)), "Saturday, 调休");
        for day in 15..=23 {
            let d = Date::from_calendar_date(2026, time::Month::February, day).unwrap();
            assert!(!cn.is_working_day(d), "{d} is 春节");
        }
        assert!(cn.is_working_day(date!(2026 - 02 - 28)), "Saturday, 调休");
        // Friday before: the make-up Saturday is the next working day.
        assert_eq!(
            cn.add_working_days(date!(2026 - 02 - 13), 1),
            date!(2026 - 02 - 14)
        );
        // Ten working days from the make-up Saturday: 24th to 28th
        // (with the second make-up Saturday), then 2nd to 6th March.
        assert_eq!(
            cn.add_working_days(date!(2026 - 02 - 14), 10),
            date!(2026 - 03 - 06)
        );
        // Against weekends only, the same ten days end in February.
        assert_eq!(
            Calendar::weekends_only().add_working_days(date!(2026 - 02 - 14), 10),
            date!(2026 - 02 - 27)
        );
    }

    #[test]
    fn national_day_2026_counts_the_sunday_before_and_the_saturday_after() {
        let cn = Calendar::national();
        assert!(cn.is_working_day(date!(2026 - 09 - 20)));
        // Wednesday 30 September: then 1-7 October off, Thursday 8th,
        // Friday 9th, Saturday 10th (调休).
        assert_eq!(
            cn.add_working_days(date!(2026 - 09 - 30), 3),
            date!(2026 - 10 - 10)
        );
    }

    #[test]
    fn the_year_boundary() {
        let cn = Calendar::national();
        // Thursday 31 December 2026; 1 January 2027 (Friday) is 元旦.
        assert!(!cn.is_working_day(date!(2027 - 01 - 01)));
        assert_eq!(
            cn.add_working_days(date!(2026 - 12 - 31), 1),
            date!(2027 - 01 - 04)
        );
        assert_eq!(
            cn.working_days_between(date!(2026 - 12 - 30), date!(2027 - 01 - 04)),
            2
        );
        // And into 2026, across its 元旦 and the Sunday worked after it.
        assert_eq!(
            cn.add_working_days(date!(2025 - 12 - 31), 1),
            date!(2026 - 01 - 04)
        );
    }

    #[test]
    fn adding_and_counting_agree() {
        let cn = Calendar::national();
        let mut day = date!(2026 - 01 - 01);
        while day < date!(2027 - 12 - 31) {
            for n in [0, 1, 3, 10] {
                assert_eq!(
                    cn.working_days_between(day, cn.add_working_days(day, n)),
                    i64::from(n),
                    "{day} + {n}"
                );
            }
            day = day.next_day().unwrap();
        }
    }

    #[test]
    fn china_dates_are_utc_plus_8() {
        let evening_utc = time::macros::datetime!(2026-02-13 17:00 UTC);
        assert_eq!(china_date(evening_utc), date!(2026 - 02 - 14));
        assert_eq!(
            china_date(time::macros::datetime!(2026-02-13 15:59 UTC)),
            date!(2026 - 02 - 13)
        );
    }

    #[test]
    fn a_bad_calendar_is_refused_with_every_problem() {
        let text = r#"
            [[year]]
            year = 2026
            holidays = ["2026-03-02", "2025-12-31", "2026-03-10..2026-03-09", "March 1st"]
            working_days = ["2026-03-02", "2026-03-03"]
        "#;
        let problems = Calendar::from_toml(text).unwrap_err();
        for expected in [
            "\"2025-12-31\" is listed under year 2026",
            "ends before it starts",
            "\"March 1st\" is not a date",
            "2026-03-03 is a Tuesday and a working day anyway",
            "2026-03-02 is both a holiday and a working day",
        ] {
            assert!(problems.contains(expected), "{expected:?} in {problems}");
        }
        assert!(Calendar::from_toml("[[year]]\nyear = 2026\nholiday = []").is_err());
        assert!(
            Calendar::from_toml("[[year]]\nyear = 2026\n[[year]]\nyear = 2026")
                .unwrap_err()
                .contains("listed twice")
        );
    }

    #[test]
    fn an_office_calendar_replaces_the_national_one() {
        let own =
            Calendar::from_toml("[[year]]\nyear = 2026\nholidays = [\"2026-03-09..2026-03-13\"]\n")
                .unwrap();
        assert!(!own.is_working_day(date!(2026 - 03 - 10)));
        // The national holidays are gone with the national calendar.
        assert!(own.is_working_day(date!(2026 - 10 - 01)));
    }
}
