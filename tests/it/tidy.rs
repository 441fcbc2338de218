//! The architecture invariants that ARCHITECTURE.md states as absences,
//! checked by reading the sources: a change that breaks one fails here, with
//! the file and line, before a reviewer has to notice.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Lines of code (comments left out) under `src/` that contain one of
/// `patterns`, in files whose path relative to `src/` does not start with
/// one of `allowed`.
fn offending(patterns: &[&str], allowed: &[&str]) -> Vec<String> {
    let root = src();
    let mut found = Vec::new();
    for file in sources(&root) {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if allowed.iter().any(|a| relative.starts_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if patterns.iter().any(|p| code.contains(p)) {
                found.push(format!("src/{relative}:{}: {}", n + 1, code));
            }
        }
    }
    found
}

#[test]
fn only_store_uses_rusqlite() {
    let found = offending(&["rusqlite"], &["store/"]);
    assert!(
        found.is_empty(),
        "rusqlite outside store:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_ui_uses_slint() {
    let found = offending(&["slint::", "use slint", "i_slint", "slint!"], &["ui/"]);
    assert!(found.is_empty(), "slint outside ui:\n{}", found.join("\n"));
}

#[test]
fn protocol_schedule_and_workdays_read_no_clock() {
    let clocks = [
        "now_utc(",
        "now_local(",
        "Instant::now(",
        "SystemTime::now(",
        "OffsetDateTime::now",
    ];
    let root = src();
    let mut found = Vec::new();
    for file in sources(&root.join("protocol"))
        .into_iter()
        .chain([root.join("schedule.rs"), root.join("workdays.rs")])
    {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if clocks.iter().any(|c| line.contains(c)) && !line.trim_start().starts_with("//") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a clock read in pure code:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_opens_with_its_purpose() {
    let missing: Vec<String> = sources(&src())
        .into_iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "no //! opening:\n{}",
        missing.join("\n")
    );
}

#[test]
fn only_the_mqtt_tasks_poll_an_event_loop() {
    let found = offending(&["eventloop.poll()"], &["mqtt/", "office/broker.rs"]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_ui_opens_no_store() {
    // The UI only draws: notices, images and the outbox are `ui_io`'s.
    let patterns = ["Store::open", "Outbox::open", "rusqlite", "File::create("];
    let found: Vec<String> = offending(&patterns, &[])
        .into_iter()
        .filter(|line| line.starts_with("src/ui/"))
        .collect();
    assert!(
        found.is_empty(),
        "the UI touches the store:\n{}",
        found.join("\n")
    );
}
