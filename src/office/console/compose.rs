//! The compose form (撰写公告) and what it makes: the notice payload people
//! sign. Pure: the time, the office's public address and the calendar are
//! passed in.
//!
//! A form is kept as typed, whatever is wrong with it, so that nothing staff
//! wrote is lost; `build` turns it into a notice only when the screens' own
//! `Notice::validate` accepts it and the personal-data scan finds nothing,
//! and otherwise lists every problem with the place it is in (标题, 正文第2块
//! 表格第3行第2列), in Chinese.

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

use crate::protocol::notice::{Block, Category, Media, Notice, Priority, Status};
use crate::protocol::personal_data::{self, Kind};
use crate::workdays::{CHINA, Calendar, china_date};

/// Working days a 公示 stays up.
pub const PUBLICITY_WORKING_DAYS: u32 = 7;
/// The day of a quarter's first month on which its periodic disclosures go
/// up (moved to the next working day when it is not one): 财务 and 居务
/// disclosures are due at least once a quarter.
pub const QUARTER_DISCLOSURE_DAY: u8 = 10;

/// How the window is chosen.
pub const WINDOW_PUBLICITY: &str = "workdays7";
pub const WINDOW_QUARTER: &str = "quarter";
pub const WINDOW_CUSTOM: &str = "custom";

/// The compose form, as typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Form {
    pub scope: String,
    pub notice_id: String,
    pub category: String,
    pub priority: String,
    pub title: String,
    pub summary: String,
    pub period: String,
    /// `WINDOW_PUBLICITY`, `WINDOW_QUARTER` or `WINDOW_CUSTOM`.
    pub window: String,
    /// YYYY-MM-DD, China dates: the first day shown, and (custom windows)
    /// the last.
    pub valid_from: String,
    pub valid_until: String,
    pub publisher: String,
    pub reviewer: String,
    pub contact: String,
    /// Screen ids, separated by commas or spaces; empty for every screen.
    pub screens: String,
    pub blocks: Vec<FormBlock>,
    /// The receipt codes a `reply` answers, separated by spaces (set by the
    /// feedback inbox's reply composer, kept through edits).
    pub reply_to: String,
}

/// One body block as typed: a paragraph's text, a table as tab-separated
/// rows (the first is the header), or an uploaded image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FormBlock {
    /// "paragraph", "table" or "image".
    pub kind: String,
    pub text: String,
    pub caption: String,
    pub sha256: String,
    pub bytes: u64,
    pub mime: String,
}

/// Something that keeps a form from becoming a notice, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub place: String,
    pub message: String,
    /// Unmasked personal data: blocks submission, unlike nothing else, the
    /// same way (listed separately so the page can say so).
    pub personal_data: bool,
}

fn problem(place: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        place: place.into(),
        message: message.into(),
        personal_data: false,
    }
}

/// What `build` needs besides the form.
pub struct Context<'a> {
    /// The office's public address, without a trailing slash: the QR link
    /// and image URLs start with it.
    pub public_url: &'a str,
    pub version: u64,
    pub now: OffsetDateTime,
    pub calendar: &'a Calendar,
}

/// The category's label for the form.
pub fn category_label(category: &str) -> &'static str {
    Category::parse(category).map_or("", Category::label_zh)
}

pub fn priority_label(priority: &str) -> &'static str {
    match priority {
        "normal" => "普通",
        "high" => "重要（加倍轮播）",
        "urgent" => "紧急（插播）",
        _ => "",
    }
}

/// A fresh form: a finance disclosure of the first scope, up for 7 working
/// days from today.
pub fn new_form(scope: &str, now: OffsetDateTime) -> Form {
    Form {
        scope: scope.to_owned(),
        category: "finance".into(),
        priority: "normal".into(),
        window: WINDOW_PUBLICITY.into(),
        valid_from: china_date(now).to_string(),
        blocks: vec![FormBlock {
            kind: "paragraph".into(),
            ..FormBlock::default()
        }],
        ..Form::default()
    }
}

/// The notice id a form without one gets: category, date and a random tail.
pub fn fresh_id(category: &str, now: OffsetDateTime, tail: u32) -> String {
    let date = china_date(now);
    let category = Category::parse(category).map_or("notice", Category::as_str);
    format!(
        "{category}-{:04}{:02}{:02}-{:04x}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        tail & 0xffff
    )
}

fn parse_date(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text.trim(), &format).ok()
}

fn china_midnight(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT).assume_offset(CHINA)
}

/// The disclosure day of the quarter after the one `date` is in.
pub fn next_quarter_disclosure_day(date: Date, calendar: &Calendar) -> Date {
    let month = u8::from(date.month());
    let (year, first_month) = match month {
        1..=3 => (date.year(), 4),
        4..=6 => (date.year(), 7),
        7..=9 => (date.year(), 10),
        _ => (date.year() + 1, 1),
    };
    let month = Month::try_from(first_month).expect("a month");
    let mut day =
        Date::from_calendar_date(year, month, QUARTER_DISCLOSURE_DAY).expect("the 10th exists");
    while !calendar.is_working_day(day) {
        day = day.next_day().expect("not the end of time");
    }
    day
}

/// The window a form asks for: from midnight of its first day to midnight
/// after its last (China time).
pub fn window(
    form: &Form,
    calendar: &Calendar,
) -> Result<(OffsetDateTime, OffsetDateTime), Problem> {
    let from = parse_date(&form.valid_from)
        .ok_or_else(|| problem("公开开始日期", "请填写日期，格式如 2026-10-08"))?;
    let until = match form.window.as_str() {
        WINDOW_PUBLICITY => calendar
            .add_working_days(from, PUBLICITY_WORKING_DAYS)
            .next_day()
            .expect("not the end of time"),
        WINDOW_QUARTER => next_quarter_disclosure_day(from, calendar),
        WINDOW_CUSTOM => {
            let last = parse_date(&form.valid_until).ok_or_else(|| {
                problem(
                    "公开截止日期",
                    "自定义期限请填写截止日期，格式如 2026-11-08",
                )
            })?;
            if last < from {
                return Err(problem("公开截止日期", "截止日期早于开始日期"));
            }
            last.next_day().expect("not the end of time")
        }
        _ => return Err(problem("公开期限", "请选择公开期限")),
    };
    Ok((china_midnight(from), china_midnight(until)))
}

/// A table pasted from a spreadsheet: rows on lines, cells between tabs,
/// the first row the header.
pub fn parse_table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split('\t')
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        });
    let header = lines.next().unwrap_or_default();
    (header, lines.collect())
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::ResidentId => "未遮盖的身份证号",
        Kind::Mobile => "未遮盖的手机号",
        Kind::BankCard => "未遮盖的银行卡号",
    }
}

fn scan(place: &str, text: &str, out: &mut Vec<Problem>) {
    for finding in personal_data::scan(text) {
        out.push(Problem {
            place: place.to_owned(),
            message: format!(
                "{}（{}）：请遮盖（如 138****1234）后再提交",
                kind_label(finding.kind),
                finding.masked
            ),
            personal_data: true,
        });
    }
}

/// The screens a form targets.
pub fn screens(form: &Form) -> Vec<String> {
    form.screens
        .split([',', '，', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The notice a form makes, with its payload bytes (what people sign), or
/// every problem found.
pub fn build(form: &Form, context: &Context<'_>) -> Result<(Notice, Vec<u8>), Vec<Problem>> {
    let mut problems = Vec::new();
    let category = Category::parse(&form.category);
    if category.is_none() {
        problems.push(problem("类别", "请选择公开类别"));
    }
    let priority = Priority::parse(&form.priority);
    if priority.is_none() {
        problems.push(problem("优先级", "请选择优先级"));
    }
    if !crate::protocol::is_valid_id(&form.notice_id) {
        problems.push(problem(
            "公告编号",
            "编号只能由字母、数字、点、下划线和连字符组成，以字母或数字开头，最长 64 个字符",
        ));
    }
    let title_chars = form.title.trim().chars().count();
    if title_chars == 0 || title_chars > crate::protocol::notice::MAX_TITLE_CHARS {
        problems.push(problem("标题", "标题须为 1 至 120 个字"));
    }
    if form.summary.chars().count() > crate::protocol::notice::MAX_SUMMARY_CHARS {
        problems.push(problem("摘要", "摘要最多 300 个字"));
    }
    if form.publisher.trim().is_empty() {
        problems.push(problem("公开主体", "请填写公开主体"));
    }
    if form.contact.trim().is_empty() {
        problems.push(problem("监督电话", "请填写监督电话或其他意见渠道"));
    }
    let window = window(form, context.calendar)
        .map_err(|p| problems.push(p))
        .ok();
    let mut body = Vec::new();
    let mut media = Vec::new();
    for (i, block) in form.blocks.iter().enumerate() {
        let place = format!("正文第{}块", i + 1);
        match block.kind.as_str() {
            "paragraph" => {
                if block.text.trim().is_empty() {
                    problems.push(problem(&place, "段落是空的：请填写或删除"));
                }
                scan(&format!("{place}（段落）"), &block.text, &mut problems);
                body.push(Block::Paragraph {
                    text: block.text.trim().to_owned(),
                });
            }
            "table" => {
                let (header, rows) = parse_table(&block.text);
                if header.is_empty() {
                    problems.push(problem(
                        &place,
                        "表格是空的：请从表格软件粘贴，第一行为表头",
                    ));
                }
                for (r, row) in rows.iter().enumerate() {
                    if row.len() != header.len() {
                        problems.push(problem(
                            format!("{place}（表格）第{}行", r + 1),
                            format!("有 {} 格，表头有 {} 格", row.len(), header.len()),
                        ));
                    }
                }
                scan(
                    &format!("{place}（表格标题）"),
                    &block.caption,
                    &mut problems,
                );
                for (c, cell) in header.iter().enumerate() {
                    scan(
                        &format!("{place}（表格）表头第{}列", c + 1),
                        cell,
                        &mut problems,
                    );
                }
                for (r, row) in rows.iter().enumerate() {
                    for (c, cell) in row.iter().enumerate() {
                        scan(
                            &format!("{place}（表格）第{}行第{}列", r + 1, c + 1),
                            cell,
                            &mut problems,
                        );
                    }
                }
                body.push(Block::Table {
                    caption: optional(&block.caption),
                    header,
                    rows,
                });
            }
            "image" => {
                if block.sha256.is_empty() {
                    problems.push(problem(&place, "请上传图片"));
                }
                scan(
                    &format!("{place}（图片说明）"),
                    &block.caption,
                    &mut problems,
                );
                let id = format!("m{}", media.len() + 1);
                media.push(Media {
                    id: id.clone(),
                    url: format!("{}/media/{}", context.public_url, block.sha256),
                    sha256: block.sha256.clone(),
                    bytes: block.bytes,
                    mime: block.mime.clone(),
                });
                body.push(Block::Image {
                    media: id,
                    caption: optional(&block.caption),
                });
            }
            other => problems.push(problem(&place, format!("未知的块类型 {other:?}"))),
        }
    }
    if body.is_empty() {
        problems.push(problem("正文", "正文至少需要一块内容"));
    }
    for (place, text) in [
        ("标题", form.title.as_str()),
        ("摘要", &form.summary),
        ("公开主体", &form.publisher),
        ("审核机构", &form.reviewer),
        ("监督电话", &form.contact),
    ] {
        scan(place, text, &mut problems);
    }
    let (Some(category), Some(priority), Some((valid_from, valid_until))) =
        (category, priority, window)
    else {
        return Err(problems);
    };
    let notice = Notice {
        schema: 1,
        id: form.notice_id.clone(),
        version: context.version,
        community: form.scope.clone(),
        category,
        priority,
        status: Status::Active,
        title: form.title.trim().to_owned(),
        summary: optional(&form.summary),
        body,
        media,
        period: optional(&form.period),
        valid_from,
        valid_until,
        issued_at: context
            .now
            .to_offset(CHINA)
            .replace_nanosecond(0)
            .unwrap_or(context.now),
        publisher: form.publisher.trim().to_owned(),
        reviewer: optional(&form.reviewer),
        contact: form.contact.trim().to_owned(),
        qr_url: Some(format!(
            "{}/n/{}/{}",
            context.public_url, form.scope, form.notice_id
        )),
        screens: screens(form),
        communities: Vec::new(),
        reply_to: form
            .reply_to
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        review_verified: false,
    };
    // The screens' own rules last: whatever the checks above missed.
    if let Err(e) = notice.validate() {
        if problems.is_empty() {
            problems.push(problem("公告", format!("不符合公开屏的公告规则：{e}")));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let payload = serde_json::to_vec_pretty(&notice).expect("a notice serialises");
    if payload.len() > crate::protocol::envelope::MAX_ENVELOPE_BYTES * 3 / 4 - 1024 {
        return Err(vec![problem(
            "公告",
            "公告过长：签名后的信封将超过 256 KiB",
        )]);
    }
    Ok((notice, payload))
}

/// The withdrawal of a published payload: the next version, `withdrawn`,
/// everything else kept (fields this version does not know too).
pub fn withdrawal(published: &[u8], now: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
    let notice = Notice::from_payload(published).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut value: serde_json::Value = serde_json::from_slice(published)?;
    value["version"] = (notice.version + 1).into();
    value["status"] = "withdrawn".into();
    value["issued_at"] =
        crate::protocol::notice::rfc3339(now.to_offset(CHINA).replace_nanosecond(0).unwrap_or(now))
            .into();
    let out = serde_json::to_vec_pretty(&value)?;
    Notice::from_payload(&out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn finance_form() -> Form {
        Form {
            scope: "lixia-demo".into(),
            notice_id: "2026q4-finance-001".into(),
            category: "finance".into(),
            priority: "normal".into(),
            title: "2026年第四季度财务公开".into(),
            window: WINDOW_PUBLICITY.into(),
            valid_from: "2026-10-08".into(),
            publisher: "历下区示范社区居民委员会".into(),
            contact: "监督电话：0531-00000000".into(),
            blocks: vec![
                FormBlock {
                    kind: "paragraph".into(),
                    text: "现将收支公开如下。".into(),
                    ..FormBlock::default()
                },
                FormBlock {
                    kind: "table".into(),
                    text: "项目\t金额（元）\r\n办公经费\t12,000.00\r\n环境整治\t20,400.00\r\n"
                        .into(),
                    caption: "支出明细".into(),
                    ..FormBlock::default()
                },
            ],
            ..Form::default()
        }
    }

    fn context(calendar: &Calendar) -> Context<'_> {
        Context {
            public_url: "https://office.example",
            version: 1,
            now: datetime!(2026-10-07 16:30 +08:00),
            calendar,
        }
    }

    #[test]
    fn a_form_makes_a_notice_the_screens_accept() {
        let calendar = Calendar::national();
        let (notice, payload) = build(&finance_form(), &context(&calendar)).unwrap();
        assert_eq!(Notice::from_payload(&payload).unwrap(), notice);
        assert_eq!(
            notice.qr_url.as_deref(),
            Some("https://office.example/n/lixia-demo/2026q4-finance-001")
        );
        let Block::Table {
            header,
            rows,
            caption,
        } = &notice.body[1]
        else {
            panic!("{:?}", notice.body[1]);
        };
        assert_eq!(header, &["项目", "金额（元）"]);
        assert_eq!(rows[1], ["环境整治", "20,400.00"]);
        assert_eq!(caption.as_deref(), Some("支出明细"));
        // The window ends at the midnight after the 7th working day.
        let last = calendar.add_working_days(date!(2026 - 10 - 08), 7);
        assert_eq!(notice.valid_until, china_midnight(last.next_day().unwrap()));
    }

    #[test]
    fn personal_data_is_named_by_its_place_and_blocks_the_notice() {
        let calendar = Calendar::national();
        let mut form = finance_form();
        form.blocks[1].text.push_str("张*三\t13812345678\n");
        form.title = "补贴名单 110101199003071234".into();
        let problems = build(&form, &context(&calendar)).unwrap_err();
        let places: Vec<&str> = problems
            .iter()
            .filter(|p| p.personal_data)
            .map(|p| p.place.as_str())
            .collect();
        assert_eq!(
            places,
            ["正文第2块（表格）第3行第2列", "标题"],
            "{problems:?}"
        );
        assert!(problems.iter().all(|p| !p.message.contains("13812345678")));
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let calendar = Calendar::national();
        let mut form = finance_form();
        form.title.clear();
        form.contact.clear();
        form.blocks[1].text.push_str("只有一格\n");
        form.valid_from = "昨天".into();
        let places: Vec<String> = build(&form, &context(&calendar))
            .unwrap_err()
            .into_iter()
            .map(|p| p.place)
            .collect();
        assert_eq!(
            places,
            ["标题", "监督电话", "公开开始日期", "正文第2块（表格）第3行"]
        );
    }

    #[test]
    fn the_quarter_preset_ends_on_the_next_quarters_disclosure_day() {
        let calendar = Calendar::weekends_only();
        // 2027-01-10 is a Sunday: the next working day.
        assert_eq!(
            next_quarter_disclosure_day(date!(2026 - 11 - 20), &calendar),
            date!(2027 - 01 - 11)
        );
        assert_eq!(
            next_quarter_disclosure_day(date!(2026 - 07 - 01), &calendar),
            date!(2026 - 10 - 12)
        );
    }

    #[test]
    fn a_withdrawal_is_the_next_version_and_keeps_unknown_fields() {
        let calendar = Calendar::national();
        let (_, payload) = build(&finance_form(), &context(&calendar)).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        value["future_field"] = "kept".into();
        let out = withdrawal(
            &serde_json::to_vec(&value).unwrap(),
            datetime!(2026-10-09 09:00 +08:00),
        )
        .unwrap();
        let notice = Notice::from_payload(&out).unwrap();
        assert_eq!((notice.version, notice.status), (2, Status::Withdrawn));
        assert!(String::from_utf8(out).unwrap().contains("future_field"));
    }
}
