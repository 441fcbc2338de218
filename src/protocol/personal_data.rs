//! Finds unmasked personal data in notice text before the office signs it:
//! 18-digit resident ID numbers, 11-digit mobile numbers and bank card numbers.
//! Lists of subsidy recipients are published with masked names (张*三) and
//! nothing more, so any of these in a notice is almost always a mistake.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ResidentId,
    Mobile,
    BankCard,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::ResidentId => "18-digit resident ID number",
            Kind::Mobile => "11-digit mobile number",
            Kind::BankCard => "bank card number",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    /// The number with all but its first 3 and last 2 characters masked,
    /// so the warning itself does not repeat the personal data.
    pub masked: String,
}

/// Scans one piece of text. A number is a maximal run of digits in which
/// single spaces or hyphens may separate groups (`6222 0212 3456 7890`), and
/// which may end in `X` (resident IDs).
pub fn scan(text: &str) -> Vec<Finding> {
    let chars: Vec<char> = text.chars().collect();
    let mut findings = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut digits = String::new();
        let mut j = i;
        while j < chars.len() {
            let c = chars[j];
            if c.is_ascii_digit() {
                digits.push(c);
                j += 1;
            } else if (c == ' ' || c == '-')
                && chars.get(j + 1).is_some_and(|n| n.is_ascii_digit())
                && chars
                    .get(j.wrapping_sub(1))
                    .is_some_and(|p| p.is_ascii_digit())
            {
                j += 1;
            } else {
                break;
            }
        }
        let ends_in_x = chars.get(j).is_some_and(|c| matches!(c, 'X' | 'x'))
            && !chars.get(j + 1).is_some_and(|c| c.is_ascii_alphanumeric());
        // A run glued to a decimal point or other letters is an amount or a code.
        let glued = chars
            .get(j)
            .is_some_and(|c| *c == '.' || (c.is_ascii_alphanumeric() && !ends_in_x))
            || (i > 0 && (chars[i - 1] == '.' || chars[i - 1].is_ascii_alphabetic()));
        if !glued {
            if let Some(kind) = classify(&digits, ends_in_x) {
                findings.push(Finding {
                    kind,
                    masked: mask(&digits, ends_in_x),
                });
            }
        }
        i = j.max(i + 1);
    }
    findings
}

fn classify(digits: &str, ends_in_x: bool) -> Option<Kind> {
    let len = digits.len();
    if (len == 17 && ends_in_x) || (len == 18 && !ends_in_x && plausible_birth_date(digits)) {
        return Some(Kind::ResidentId);
    }
    if ends_in_x {
        return None;
    }
    let b = digits.as_bytes();
    if len == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) {
        return Some(Kind::Mobile);
    }
    if (16..=19).contains(&len) && luhn(digits) {
        return Some(Kind::BankCard);
    }
    None
}

/// Resident IDs carry the holder's birth date in digits 7 to 14.
fn plausible_birth_date(digits: &str) -> bool {
    let year: u32 = digits[6..10].parse().unwrap_or(0);
    let month: u32 = digits[10..12].parse().unwrap_or(0);
    let day: u32 = digits[12..14].parse().unwrap_or(0);
    (1900..=2100).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

fn mask(digits: &str, ends_in_x: bool) -> String {
    let full = if ends_in_x {
        format!("{digits}X")
    } else {
        digits.to_owned()
    };
    let n = full.chars().count();
    full.chars()
        .enumerate()
        .map(|(i, c)| if i < 3 || i + 2 >= n { c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        scan(text).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn finds_unmasked_numbers() {
        assert_eq!(
            kinds("身份证 37010219800101123X 已登记"),
            vec![Kind::ResidentId]
        );
        assert_eq!(
            kinds("身份证号370102198001011234。"),
            vec![Kind::ResidentId]
        );
        assert_eq!(kinds("联系电话13800138000"), vec![Kind::Mobile]);
        assert_eq!(kinds("电话 138-0013-8000"), vec![Kind::Mobile]);
        assert_eq!(kinds("卡号 6222 0212 3456 7890 128"), vec![Kind::BankCard]);
        assert_eq!(kinds("卡号4111111111111111"), vec![Kind::BankCard]);
    }

    #[test]
    fn leaves_masked_numbers_amounts_and_landlines_alone() {
        assert!(kinds("张*三 138****8000 3701**********123X").is_empty());
        assert!(kinds("本季度收入 52,300.00 元，支出 48120.50 元").is_empty());
        assert!(kinds("监督电话：0531-00000000").is_empty());
        assert!(
            kinds("编号 20261008000000000001").is_empty(),
            "20 digits is neither"
        );
        assert!(
            kinds("卡号4111111111111112").is_empty(),
            "fails the Luhn check"
        );
    }

    #[test]
    fn warnings_do_not_repeat_the_number() {
        assert_eq!(scan("13800138000")[0].masked, "138******00");
    }

    #[test]
    fn no_sample_holds_personal_data() {
        for (name, text) in crate::samples::ALL {
            let notice = crate::protocol::Notice::from_payload(text.as_bytes()).unwrap();
            let found: Vec<_> = notice.texts().into_iter().flat_map(scan).collect();
            assert!(found.is_empty(), "{name}: {found:?}");
        }
    }
}
