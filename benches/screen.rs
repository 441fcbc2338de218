//! Benchmarks of the screen's UI, printed as figures (not asserted):
//! - full-frame software render of 1920×1080 pages (every page of every
//!   sample), median and p95;
//! - `gongkaid` in a 1920×1080 window under Xvfb rotating the samples with a
//!   page every 3 s: CPU over 60 s (and the X server's, for the record), PSS;
//! - PSS with 1,000 cached notices, 50 of them with an image, window open;
//! - the same with systemd's watchdog on (a notify socket of the bench's,
//!   `WATCHDOG=1` from the UI thread), side by side; play logging is always on;
//! - cold start to the first content frame from the cache with the broker
//!   unreachable (the first slot is an urgent notice, so its red header
//!   marks the frame; found by polling `xwd` screenshots);
//! - a screenshot command (PROTOCOL 1.1 section 5) from its PUBLISH to the
//!   PNG stored in a real office's database, over HTTPS on loopback: p50, p95.
//!
//! `cargo bench --bench screen`; the window figures need Xvfb and xwd.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Xvfb, config_text};
use gongkai::protocol::Notice;
use gongkai::ui::{self, Images, PageView};
use time::OffsetDateTime;

const COMMUNITY: &str = "bench";
const SCREEN: &str = "bench-lobby";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench screen`");
        return;
    }
    render_frames();
    if !common::have("Xvfb") || !common::have("xwd") {
        println!("window figures skipped: no Xvfb or xwd");
        return;
    }
    let port = gongkai::demo::start_embedded_broker().unwrap();
    screenshot_round_trips(port);
    rotating_samples(port, false);
    rotating_samples(port, true);
    let dir = tempfile::tempdir().unwrap();
    let config = thousand_notices(dir.path());
    memory_with_images(&config);
    cold_start(&config);
}

/// Every page of every sample at 1920×1080, rendered in full 20 times.
fn render_frames() {
    let now = OffsetDateTime::now_utc();
    let (width, height) = (1920, 1080);
    let mut times = Vec::new();
    let mut pages = 0;
    for (_, text) in gongkai::samples::ALL {
        let notice = Notice::from_payload(text.as_bytes()).unwrap();
        let laid_out = ui::pages_of(&notice, width, height).unwrap();
        let count = laid_out.len();
        for (i, blocks) in laid_out.into_iter().enumerate() {
            pages += 1;
            let view = PageView {
                blocks,
                page: format!("第 {}/{count} 页", i + 1),
                ..PageView::new(&notice, vec![], 1, 1, now, None)
            };
            for _ in 0..20 {
                let started = Instant::now();
                ui::render_rgba(&view, &Images::default(), width, height).unwrap();
                times.push(started.elapsed());
            }
        }
    }
    times.sort();
    println!(
        "full-frame software render at 1920x1080 ({pages} sample pages x 20): median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 95 / 100]),
        ms(*times.last().unwrap())
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn config_file(dir: &Path, broker: &str, dwell: u64) -> PathBuf {
    let path = dir.join("screen.toml");
    let text = config_text(broker, COMMUNITY, SCREEN, &dir.join("screen.db")).replace(
        "dwell_seconds = 2\n",
        &format!("dwell_seconds = {dwell}\nwidth = 1920\nheight = 1080\nfullscreen = false\n"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_screen(config: &Path, display: &str, log: &Path) -> Child {
    spawn_screen_with(config, display, log, &[])
}

/// With `WATCHDOG_USEC` in `env`, through `sh` that sets `WATCHDOG_PID` to
/// the pid gongkaid will have, as systemd does: the watchdog is on only
/// for the process it names.
fn spawn_screen_with(config: &Path, display: &str, log: &Path, env: &[(&str, &str)]) -> Child {
    let mut command = if env.iter().any(|(k, _)| *k == "WATCHDOG_USEC") {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_gongkaid"));
        sh
    } else {
        Command::new(env!("CARGO_BIN_EXE_gongkaid"))
    };
    command
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(8);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz: f64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(100.0);
    ticks / hz
}

/// Proportional set size in MiB.
fn pss_mib(pid: u32) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// The samples, rotating with a page every 3 s, connected to a broker;
/// with `watchdog`, under a watchdog of 30 s as the unit sets, its pings
/// read from a notify socket of the bench's own.
fn rotating_samples(port: u16, watchdog: bool) {
    let Some(x) = Xvfb::start("bench-cpu", 1920, 1080) else {
        return;
    };
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let pings = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut env = Vec::new();
    if watchdog {
        let socket = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        let pings = pings.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "WATCHDOG=1")
                {
                    pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        env.push(("NOTIFY_SOCKET", notify_path.to_str().unwrap()));
        env.push(("WATCHDOG_USEC", "30000000"));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &format!("mqtt://127.0.0.1:{port}"), 3);
    let now = OffsetDateTime::now_utc();
    let payloads: Vec<serde_json::Value> = gongkai::demo::shifted_samples(now)
        .into_iter()
        .map(|(_, bytes)| {
            let mut p: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            p["community"] = COMMUNITY.into();
            p
        })
        .collect();
    common::commit_signed(&dir.path().join("screen.db"), COMMUNITY, &payloads);
    let log = dir.path().join("gongkaid.log");
    let child = spawn_screen_with(&config, &x.display, &log, &env);
    let pid = child.id();
    // Warm up: fonts loaded, first pages drawn.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu0, x0, t0) = (cpu_seconds(pid), cpu_seconds(x.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(60));
    let (cpu1, x1, elapsed) = (cpu_seconds(pid), cpu_seconds(x.pid()), t0.elapsed());
    let pss = pss_mib(pid);
    let steps = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("rotation: showing")
        .count();
    stop(child);
    let plays = gongkai::store::plays::PlayLog::open(&dir.path().join("screen.db"))
        .and_then(|log| log.head())
        .ok()
        .flatten()
        .map_or(0, |r| r.seq);
    let share = |a: f64, b: f64| (b - a) / elapsed.as_secs_f64() * 100.0;
    let watched = if watchdog {
        format!(
            ", watchdog on: {} WATCHDOG=1 pings",
            pings.load(std::sync::atomic::Ordering::Relaxed)
        )
    } else {
        ", watchdog off".to_owned()
    };
    println!(
        "gongkaid rotating the {} samples in a 1920x1080 window under Xvfb, a page every 3 s{watched}: CPU {:.2} % of one core over {:.0} s (Xvfb {:.2} %), PSS {pss:.1} MiB, {steps} rotation slots, {plays} play records",
        payloads.len(),
        share(cpu0, cpu1),
        elapsed.as_secs_f64(),
        share(x0, x1),
    );
}

/// A PNG of `width`×`height`, a gradient tinted by `seed`.
fn image_png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let mut rgba = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            rgba.extend([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                seed.wrapping_mul(37),
                255,
            ]);
        }
    }
    ui::png(&rgba, width, height).unwrap()
}

/// A store of 1,000 notices (one urgent, 50 with an image, those first in
/// the rotation) with the images in the media cache, and a broker that is
/// not there.
fn thousand_notices(dir: &Path) -> PathBuf {
    let closed = common::free_port();
    let config = config_file(dir, &format!("mqtt://127.0.0.1:{closed}"), 3);
    let media = dir.join("media");
    std::fs::create_dir_all(&media).unwrap();
    let now = OffsetDateTime::now_utc();
    let rfc = gongkai::protocol::notice::rfc3339;
    let categories = ["affairs", "finance", "government", "services", "reply"];
    let payloads: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            let mut p = common::notice(COMMUNITY, &format!("n{i:04}"), 1);
            p["category"] = categories[i % 5].into();
            p["title"] = format!("第{i}号公告：社区公共事务公开").into();
            p["body"] = serde_json::json!([
                {"type": "paragraph", "text": "根据居务公开制度，现将有关事项公开如下，接受居民监督。如有疑问，请于公开期内通过触摸屏、意见箱或监督电话反映。".repeat(3)},
                {"type": "table", "caption": "明细", "header": ["项目", "金额（元）"],
                 "rows": [["办公经费", "12,000.00"], ["环境整治", "20,400.00"], ["为老服务", "15,720.50"]]}
            ]);
            if i < 50 {
                let png = image_png(1600, 900, i as u8);
                let sha = gongkai::protocol::sha256_hex(&png);
                std::fs::write(media.join(&sha), &png).unwrap();
                p["category"] = "affairs".into();
                p["valid_from"] = rfc(now - time::Duration::minutes(30)).into();
                p["media"] = serde_json::json!([{"id": "m1", "url": format!("http://127.0.0.1:{closed}/m/{i}.png"),
                    "sha256": sha, "bytes": png.len(), "mime": "image/png"}]);
                p["body"].as_array_mut().unwrap().insert(1, serde_json::json!({"type": "image", "media": "m1", "caption": "现场照片"}));
            }
            if i == 999 {
                p["priority"] = "urgent".into();
                p["title"] = "停水通知：6号楼至9号楼管网维修".into();
            }
            p
        })
        .collect();
    common::commit_signed(&dir.join("screen.db"), COMMUNITY, &payloads);
    config
}

/// PSS once the screen has shown several notices with images.
fn memory_with_images(config: &Path) {
    let Some(x) = Xvfb::start("bench-memory", 1920, 1080) else {
        return;
    };
    let log = config.with_file_name("memory.log");
    let child = spawn_screen(config, &x.display, &log);
    let pid = child.id();
    let mut peak: f64 = 0.0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        peak = peak.max(pss_mib(pid));
    }
    let now = pss_mib(pid);
    let steps = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("rotation: showing")
        .count();
    stop(child);
    println!(
        "gongkaid with 1000 cached notices (50 with a 1600x900 image, shown first), 1920x1080 window under Xvfb, broker unreachable: PSS {now:.1} MiB after 30 s (peak {peak:.1} MiB), {steps} rotation slots"
    );
}

/// Spawn to the first frame with content, five times.
fn cold_start(config: &Path) {
    let Some(x) = Xvfb::start("bench-cold", 1920, 1080) else {
        return;
    };
    let urgent_red = [0xa4, 0x00, 0x1d];
    let mut times = Vec::new();
    for run in 0..5 {
        let log = config.with_file_name(format!("cold-{run}.log"));
        let started = Instant::now();
        let child = spawn_screen(config, &x.display, &log);
        let first = loop {
            let (_, _, rgb) = x.screenshot();
            if rgb[..3] == urgent_red {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no content frame"
            );
        };
        times.push(first);
        stop(child);
        std::thread::sleep(Duration::from_millis(500));
    }
    times.sort();
    println!(
        "cold start to the first content frame, 1000 cached notices, broker unreachable, 1920x1080 under Xvfb: median {:.0} ms, min {:.0} ms, max {:.0} ms (screenshots by xwd, each ~{:.0} ms)",
        ms(times[2]),
        ms(times[0]),
        ms(times[4]),
        {
            let t = Instant::now();
            x.screenshot();
            ms(t.elapsed())
        }
    );
}

/// Screenshot commands, one at a time, to a headless 1920×1080 screen: from
/// the command's PUBLISH to its PNG in the office's database.
fn screenshot_round_trips(port: u16) {
    use gongkai::protocol::command::Action;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office = common::OfficeServer::running();
    let screen = "bench-shot";
    let token = office.token_file(screen);
    let operator = gongkai::protocol::SecretKey::from_seed([6; 32]);
    let broker = format!("mqtt://127.0.0.1:{port}");
    let config = dir.path().join("screen.toml");
    let text = config_text(&broker, COMMUNITY, screen, &dir.path().join("screen.db"))
        .replace(
            "[store]",
            &format!(
                "operator = [\"{}\"]\n[store]",
                operator.public().to_base64()
            ),
        )
        .replace(
            "dwell_seconds = 2\n",
            "dwell_seconds = 3\nwidth = 1920\nheight = 1080\n",
        )
        + &format!(
            "[office]\nurl = \"{}\"\ntoken_file = \"{}\"\n{}",
            office.url,
            token.display(),
            office.screen_trust()
        );
    std::fs::write(&config, text).unwrap();
    let now = OffsetDateTime::now_utc();
    let payloads: Vec<serde_json::Value> = gongkai::demo::shifted_samples(now)
        .into_iter()
        .map(|(_, bytes)| {
            let mut p: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            p["community"] = COMMUNITY.into();
            p
        })
        .collect();
    common::commit_signed(&dir.path().join("screen.db"), COMMUNITY, &payloads);
    let mut daemon = common::DaemonProcess::start(&config, &dir.path().join("gongkaid.log"));
    let topics = gongkai::protocol::TopicSpace::new(common::PREFIX, COMMUNITY);
    let stored = |id: &str| {
        rusqlite::Connection::open(&office.database)
            .and_then(|db| {
                db.query_row(
                    "SELECT count(*) FROM screenshots WHERE command_id = ?1",
                    [id],
                    |row| row.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
            > 0
    };
    let mut times = Vec::new();
    runtime.block_on(async {
        let mut client = common::publisher(&broker).await;
        // Connected and drawing before the first command.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for _ in 0..21 {
            let (id, envelope) = gongkai::office::command::signed_command(
                COMMUNITY,
                screen,
                Action::Screenshot,
                &operator,
                OffsetDateTime::now_utc(),
            )
            .unwrap();
            let started = Instant::now();
            client
                .publish(&topics.screen_command(screen), envelope)
                .await
                .unwrap();
            while !stored(id.as_str()) {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no screenshot stored in 30 s:\n{}",
                    daemon.log_text()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            times.push(started.elapsed());
        }
        client.close().await;
    });
    daemon.kill9();
    // The first warms the render thread and the HTTPS connection.
    times.remove(0);
    times.sort();
    println!(
        "screenshot command -> PNG stored at the office (headless 1920x1080, HTTPS on loopback), {} commands: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 95 / 100]),
        ms(times[times.len() - 1])
    );
}
