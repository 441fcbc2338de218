//! What changed between two versions of a notice (整改: what changed), as
//! supervisors read it: each notice as lines a person reads (title, window,
//! each paragraph, each table row), and the longest common subsequence of
//! the two. Pure.

use crate::protocol::notice::{Block, Notice, rfc3339};

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Same(String),
    Added(String),
    Removed(String),
}

/// A notice as the lines a reviewer compares.
pub fn lines(notice: &Notice) -> Vec<String> {
    let mut out = vec![
        format!("类别：{}", notice.category.label_zh()),
        format!(
            "状态：{}",
            match notice.status {
                crate::protocol::notice::Status::Active => "公开",
                crate::protocol::notice::Status::Withdrawn => "撤回",
            }
        ),
        format!("优先级：{}", notice.priority.as_str()),
        format!("标题：{}", notice.title),
    ];
    if let Some(summary) = &notice.summary {
        out.push(format!("摘要：{summary}"));
    }
    out.push(format!(
        "公开期限：{} 至 {}",
        rfc3339(notice.valid_from),
        rfc3339(notice.valid_until)
    ));
    for (i, block) in notice.body.iter().enumerate() {
        let n = i + 1;
        match block {
            Block::Paragraph { text } => {
                for line in text.lines() {
                    out.push(format!("正文{n}：{line}"));
                }
            }
            Block::Table {
                caption,
                header,
                rows,
            } => {
                out.push(format!(
                    "正文{n}（表格{}）：{}",
                    caption
                        .as_deref()
                        .map(|c| format!(" {c}"))
                        .unwrap_or_default(),
                    header.join(" | ")
                ));
                for row in rows {
                    out.push(format!("正文{n}（表格行）：{}", row.join(" | ")));
                }
            }
            Block::Image { media, caption } => {
                let hash = notice
                    .media
                    .iter()
                    .find(|m| &m.id == media)
                    .map_or("", |m| &m.sha256[..12.min(m.sha256.len())]);
                out.push(format!(
                    "正文{n}（图片 {hash}）：{}",
                    caption.as_deref().unwrap_or("")
                ));
            }
        }
    }
    out.push(format!("公开主体：{}", notice.publisher));
    if let Some(reviewer) = &notice.reviewer {
        out.push(format!("审核机构：{reviewer}"));
    }
    out.push(format!("监督电话：{}", notice.contact));
    if !notice.screens.is_empty() {
        out.push(format!("目标屏幕：{}", notice.screens.join(", ")));
    }
    out
}

/// The lines of `new` against `old`: kept, added and removed, in order.
pub fn diff(old: &[String], new: &[String]) -> Vec<Line> {
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push(Line::Same(old[i].clone()));
            i += 1;
            j += 1;
        } else if j < new.len() && (i == old.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(Line::Added(new[j].clone()));
            j += 1;
        } else {
            out.push(Line::Removed(old[i].clone()));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_changed_line_is_removed_and_added_and_the_rest_kept() {
        let old = strings(&["标题：A", "正文1：一", "正文2：二"]);
        let new = strings(&["标题：A", "正文1：一（已更正）", "正文2：二", "正文3：三"]);
        assert_eq!(
            diff(&old, &new),
            [
                Line::Same("标题：A".into()),
                Line::Added("正文1：一（已更正）".into()),
                Line::Removed("正文1：一".into()),
                Line::Same("正文2：二".into()),
                Line::Added("正文3：三".into()),
            ]
        );
    }

    #[test]
    fn nothing_before_means_everything_added() {
        let new = strings(&["a", "b"]);
        assert!(diff(&[], &new).iter().all(|l| matches!(l, Line::Added(_))));
        assert_eq!(diff(&new, &new).len(), 2);
    }
}
