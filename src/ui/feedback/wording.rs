//! What the feedback flow offers and says: the preset reasons of each kind
//! of feedback (and the one each kind of notice adds to a rating), the
//! messages a resident reads, and how long an entry may be. The codes are
//! the office's; the words are for residents, in Simplified Chinese.

use crate::protocol::Category;

/// A preset reason as the screen lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub(super) const RATING_REASONS: [(&str, &str); 5] = [
    ("unclear", "看不懂"),
    ("error", "内容有误"),
    ("more-detail", "希望更详细"),
    ("late", "公开不及时"),
    ("other", "其他"),
];
pub(super) const OBJECTION_REASONS: [(&str, &str); 4] = [
    ("wrong-data", "数据有误"),
    ("improper-procedure", "程序不当"),
    ("privacy", "涉及个人隐私"),
    ("other", "其他"),
];
pub(super) const OPINION_REASONS: [(&str, &str); 6] = [
    ("environment", "环境卫生"),
    ("parking", "停车管理"),
    ("safety", "治安安全"),
    ("services", "便民服务"),
    ("repairs", "设施维修"),
    ("other", "其他"),
];

/// The reason of its own a rating of each kind of notice offers besides the
/// common ones.
pub(super) fn own_reason(category: Category) -> (&'static str, &'static str) {
    match category {
        Category::Finance => ("amounts", "金额有疑问"),
        Category::Reply => ("not-solved", "问题未解决"),
        Category::Government => ("how-to-apply", "不清楚如何办理"),
        Category::Services => ("not-notified", "通知不够及时"),
        Category::Affairs => ("process", "希望公开决策过程"),
    }
}

pub const TOO_SOON: &str = "操作过于频繁，请稍后再试。";
pub(super) const NOT_OPEN: &str = "本屏暂未开通意见提交，请联系社区工作人员。";
pub(super) const NOT_COMMITTED: &str = "提交失败，请稍后再试，或联系社区工作人员。";
pub(super) const CHOOSE_ONE: &str = "请至少选择一项。";
pub(super) const BAD_NUMBER: &str = "请输入以 1 开头的 11 位手机号码。";
pub(super) const BAD_RECEIPT: &str = "回执码为 6 位数字或字母，请核对后重新输入。";
pub(super) const LOOKUP_FAILED: &str = "暂时无法查询，请稍后再试。";
pub(super) const PHONE_DIGITS: usize = 11;
pub(super) const RECEIPT_CHARS: usize = 6;
