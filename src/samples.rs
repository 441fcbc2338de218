//! The sample notices shipped with gongkai (unsigned payloads), compiled in so
//! that the demo and the tests need no files beside the binary.

/// `(file name, payload JSON)` for every sample.
pub const ALL: [(&str, &str); 10] = [
    (
        "2026q3-finance.json",
        include_str!("../samples/2026q3-finance.json"),
    ),
    (
        "annual-plan-2027.json",
        include_str!("../samples/annual-plan-2027.json"),
    ),
    (
        "committee-members.json",
        include_str!("../samples/committee-members.json"),
    ),
    (
        "dibao-preliminary-2026-10.json",
        include_str!("../samples/dibao-preliminary-2026-10.json"),
    ),
    (
        "elevator-consultation.json",
        include_str!("../samples/elevator-consultation.json"),
    ),
    (
        "medical-insurance-2027.json",
        include_str!("../samples/medical-insurance-2027.json"),
    ),
    (
        "reply-2026-10.json",
        include_str!("../samples/reply-2026-10.json"),
    ),
    (
        "resident-meeting-2026-09.json",
        include_str!("../samples/resident-meeting-2026-09.json"),
    ),
    (
        "small-business-support.json",
        include_str!("../samples/small-business-support.json"),
    ),
    (
        "water-cut-notice.json",
        include_str!("../samples/water-cut-notice.json"),
    ),
];
