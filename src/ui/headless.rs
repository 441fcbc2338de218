//! The software renderer without a display: previews (`gongkai render`, and
//! the console's, a kiosk's opened notice among them), pixel tests, and
//! `gongkaid --demo` on a machine with no display, which writes each new
//! frame to a PNG file.
//!
//! Slint takes one platform per process: the first headless use installs
//! ours, and a process that opened a real window cannot render headless.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use slint::ComponentHandle;
use slint::platform::software_renderer::{
    MinimalSoftwareWindow, PremultipliedRgbaColor, RepaintBufferType,
};
use slint::platform::{EventLoopProxy, Platform, WindowAdapter};
use time::OffsetDateTime;

use super::paging::{fits_now, paginate};
use super::{
    AppWindow, BlockView, Images, PageView, Screen, ScreenMode, ScreenView, apply, body_blocks,
};
use crate::protocol::Notice;

type Job = Box<dyn FnOnce() + Send>;

/// Work handed to the headless event loop from other threads.
#[derive(Default)]
struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    wake: Condvar,
}

struct Proxy(Arc<Queue>);

impl EventLoopProxy for Proxy {
    fn quit_event_loop(&self) -> Result<(), slint::EventLoopError> {
        self.0.jobs.lock().expect("queue lock").1 = true;
        self.0.wake.notify_one();
        Ok(())
    }

    fn invoke_from_event_loop(&self, event: Job) -> Result<(), slint::EventLoopError> {
        self.0.jobs.lock().expect("queue lock").0.push_back(event);
        self.0.wake.notify_one();
        Ok(())
    }
}

/// What a frame is handed to when the headless event loop draws one.
type FrameSink = Box<dyn FnMut(&[PremultipliedRgbaColor], u32, u32)>;

/// What the platform and this module share, on the UI thread.
#[derive(Default)]
struct Shared {
    /// Every window made, newest last: a component made just now finds its
    /// window here.
    windows: RefCell<Vec<Rc<MinimalSoftwareWindow>>>,
    /// The window whose frames the event loop hands on, and to what.
    sink: RefCell<Option<(Rc<MinimalSoftwareWindow>, FrameSink)>>,
}

struct Headless {
    started: Instant,
    queue: Arc<Queue>,
    shared: Rc<Shared>,
}

impl Platform for Headless {
    fn create_window_adapter(&self) -> Result<Rc<dyn WindowAdapter>, slint::PlatformError> {
        let window = MinimalSoftwareWindow::new(RepaintBufferType::NewBuffer);
        self.shared.windows.borrow_mut().push(window.clone());
        Ok(window)
    }

    fn duration_since_start(&self) -> Duration {
        self.started.elapsed()
    }

    fn new_event_loop_proxy(&self) -> Option<Box<dyn EventLoopProxy>> {
        Some(Box::new(Proxy(self.queue.clone())))
    }

    /// Runs jobs and timers, and hands every frame that changed to the sink.
    fn run_event_loop(&self) -> Result<(), slint::PlatformError> {
        loop {
            let jobs: Vec<Job> = {
                let mut guard = self.queue.jobs.lock().expect("queue lock");
                if guard.1 {
                    guard.1 = false;
                    return Ok(());
                }
                guard.0.drain(..).collect()
            };
            for job in jobs {
                job();
            }
            slint::platform::update_timers_and_animations();
            if let Some((window, sink)) = self.shared.sink.borrow_mut().as_mut() {
                let size = window.size();
                let mut buffer =
                    vec![PremultipliedRgbaColor::default(); (size.width * size.height) as usize];
                let drawn = window.draw_if_needed(|renderer| {
                    renderer.render(&mut buffer, size.width as usize);
                });
                if drawn {
                    sink(&buffer, size.width, size.height);
                }
            }
            let wait = slint::platform::duration_until_next_timer_update()
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let guard = self.queue.jobs.lock().expect("queue lock");
            if guard.0.is_empty() && !guard.1 {
                let _ = self.queue.wake.wait_timeout(guard, wait);
            }
        }
    }
}

thread_local! {
    static SHARED: RefCell<Option<Rc<Shared>>> = const { RefCell::new(None) };
    static PREVIEW: RefCell<Option<(Rc<MinimalSoftwareWindow>, AppWindow)>> = const { RefCell::new(None) };
    static PAGED: RefCell<Option<(PagingKey, Vec<Vec<BlockView>>)>> = const { RefCell::new(None) };
}

/// What the pages of a notice depend on: where and how large it is shown,
/// the notice itself (by the hash of its JSON), and the images present.
/// A preview asked for page after page of one notice pages it once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PagingKey {
    look: Look,
    size: (u32, u32),
    notice: String,
    shapes: Vec<(String, u32)>,
}

impl PagingKey {
    fn of(look: Look, size: (u32, u32), notice: &Notice, images: &super::Images) -> Option<Self> {
        let json = serde_json::to_vec(notice).ok()?;
        Some(PagingKey {
            look,
            size,
            notice: crate::protocol::sha256_hex(&json),
            shapes: images.shapes(),
        })
    }
}

/// The pages of `notice` as `ui` (already showing its frame) lays them out,
/// from the last call's when that was the same notice in the same place.
fn paged(
    key: Option<PagingKey>,
    ui: &AppWindow,
    frame: &PageView,
    notice: &Notice,
    images: &super::Images,
) -> Vec<Vec<BlockView>> {
    PAGED.with(|cell| {
        if let (Some(key), Some((held, pages))) = (&key, cell.borrow().as_ref()) {
            if key == held {
                return pages.clone();
            }
        }
        let pages = paginate(ui, frame, &body_blocks(notice, images));
        *cell.borrow_mut() = key.map(|key| (key, pages.clone()));
        pages
    })
}

/// Installs the headless platform for this process, once, and returns what
/// it shares with this module.
fn install() -> anyhow::Result<Rc<Shared>> {
    SHARED.with(|cell| {
        if let Some(shared) = cell.borrow().as_ref() {
            return Ok(shared.clone());
        }
        let shared = Rc::new(Shared::default());
        slint::platform::set_platform(Box::new(Headless {
            started: Instant::now(),
            queue: Arc::new(Queue::default()),
            shared: shared.clone(),
        }))
        .map_err(|e| anyhow::anyhow!("cannot install the headless renderer: {e}"))?;
        *cell.borrow_mut() = Some(shared.clone());
        Ok(shared)
    })
}

/// Makes an `AppWindow` on the headless platform, with its window.
fn new_window(width: u32, height: u32) -> anyhow::Result<(Rc<MinimalSoftwareWindow>, AppWindow)> {
    let shared = install()?;
    let ui = AppWindow::new().context("creating the UI")?;
    let window = shared
        .windows
        .borrow()
        .last()
        .cloned()
        .context("the UI made no window")?;
    ui.show().context("showing the UI")?;
    resize(&window, &ui, width, height);
    Ok((window, ui))
}

fn resize(window: &MinimalSoftwareWindow, ui: &AppWindow, width: u32, height: u32) {
    window.set_size(slint::PhysicalSize::new(width, height));
    super::set_screen_size(ui, width, height);
}

/// Where a previewed page is shown: how the UI frames it, and so how much
/// room its body has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// A lobby screen's rotation.
    Rotation,
    /// A notice a resident opened on a kiosk: the kiosk's own notice view,
    /// with its bar of 返回, 上一页, 下一页, 评价, 异议 and 首页 under the body.
    KioskNotice,
}

/// Puts the preview UI in `look`: one UI serves every preview of the
/// thread, so each render says which it draws.
fn set_look(ui: &AppWindow, look: Look) {
    let screen = ui.global::<Screen>();
    let (mode, view) = match look {
        Look::Rotation => (ScreenMode::Led, ScreenView::Rotation),
        Look::KioskNotice => (ScreenMode::Kiosk, ScreenView::Notice),
    };
    screen.set_mode(mode);
    screen.set_view(view);
    // A preview is of a notice in force, without another's urgent banner.
    screen.set_mark("".into());
    screen.set_banner("".into());
}

/// Runs `f` with this thread's preview UI sized `width`×`height`, in the
/// rotation's look.
fn with_preview<T>(
    width: u32,
    height: u32,
    f: impl FnOnce(&MinimalSoftwareWindow, &AppWindow) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    with_preview_in(Look::Rotation, width, height, f)
}

fn with_preview_in<T>(
    look: Look,
    width: u32,
    height: u32,
    f: impl FnOnce(&MinimalSoftwareWindow, &AppWindow) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    PREVIEW.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(new_window(width, height)?);
        }
        let (window, ui) = slot.as_ref().expect("set above");
        set_look(ui, look);
        resize(window, ui, width, height);
        f(window, ui)
    })
}

/// The pages of a notice at `width`×`height`, as the headless UI lays them out.
pub fn pages_of(notice: &Notice, width: u32, height: u32) -> anyhow::Result<Vec<Vec<BlockView>>> {
    with_preview(width, height, |_, ui| {
        let images = Images::default();
        let frame = PageView::new(notice, Vec::new(), 1, 1, OffsetDateTime::UNIX_EPOCH, None);
        apply(ui, &frame, &images)?;
        Ok(paginate(ui, &frame, &body_blocks(notice, &images)))
    })
}

/// One rendered page: RGBA pixels (not premultiplied), and whether its body
/// needed more room than the page has (only a single table row taller than a
/// page can; everything else is paged).
pub struct RenderedPage {
    pub rgba: Vec<u8>,
    pub overflows: bool,
}

/// Renders every page of a notice at `width`×`height` without a display.
pub fn render_notice(
    notice: &Notice,
    images: &Images,
    width: u32,
    height: u32,
    now: OffsetDateTime,
    offline_since: Option<OffsetDateTime>,
) -> anyhow::Result<Vec<RenderedPage>> {
    with_preview(width, height, |window, ui| {
        let frame = PageView::new(notice, Vec::new(), 1, 1, now, offline_since);
        apply(ui, &frame, images)?;
        let pages = paginate(ui, &frame, &body_blocks(notice, images));
        let count = pages.len();
        pages
            .into_iter()
            .enumerate()
            .map(|(i, blocks)| {
                let page = PageAt {
                    blocks,
                    page: (i + 1, count),
                    size: (width, height),
                };
                draw_page(window, ui, &frame, page, images)
            })
            .collect()
    })
}

/// Page `page` (from 1) of a notice, and how many pages it has: only that
/// page is drawn, so a notice of thousands of pages costs one frame.
pub fn render_notice_page(
    notice: &Notice,
    images: &Images,
    size: (u32, u32),
    now: OffsetDateTime,
    page: usize,
) -> anyhow::Result<(RenderedPage, usize)> {
    render_page_in(Look::Rotation, notice, images, size, now, page)
}

/// Page `page` (from 1) of a notice as a kiosk shows it when a resident
/// opens it, and how many pages it has there: the kiosk's notice view,
/// whose bar of buttons leaves the body less room than the rotation has.
pub fn render_kiosk_page(
    notice: &Notice,
    images: &Images,
    size: (u32, u32),
    now: OffsetDateTime,
    page: usize,
) -> anyhow::Result<(RenderedPage, usize)> {
    render_page_in(Look::KioskNotice, notice, images, size, now, page)
}

fn render_page_in(
    look: Look,
    notice: &Notice,
    images: &Images,
    (width, height): (u32, u32),
    now: OffsetDateTime,
    page: usize,
) -> anyhow::Result<(RenderedPage, usize)> {
    with_preview_in(look, width, height, |window, ui| {
        let frame = PageView::new(notice, Vec::new(), 1, 1, now, None);
        apply(ui, &frame, images)?;
        let key = PagingKey::of(look, (width, height), notice, images);
        let mut pages = paged(key, ui, &frame, notice, images);
        let count = pages.len();
        if page == 0 || page > count {
            anyhow::bail!("{} has {count} page(s) at {width}x{height}", notice.id);
        }
        let blocks = pages.swap_remove(page - 1);
        drop(pages);
        let at = PageAt {
            blocks,
            page: (page, count),
            size: (width, height),
        };
        let rendered = draw_page(window, ui, &frame, at, images)?;
        Ok((rendered, count))
    })
}

/// One page of a paginated notice: its blocks, `(page, count)` from 1, and
/// the frame's size.
struct PageAt {
    blocks: Vec<BlockView>,
    page: (usize, usize),
    size: (u32, u32),
}

fn draw_page(
    window: &MinimalSoftwareWindow,
    ui: &AppWindow,
    frame: &PageView,
    at: PageAt,
    images: &Images,
) -> anyhow::Result<RenderedPage> {
    let (page, count) = at.page;
    // The kiosk's page buttons, as `ui::notice` sets them (unused elsewhere).
    let screen = ui.global::<Screen>();
    screen.set_can_prev(page > 1);
    screen.set_can_next(page < count);
    let view = PageView {
        blocks: at.blocks,
        page: format!("第 {page}/{count} 页"),
        ..frame.clone()
    };
    apply(ui, &view, images)?;
    let overflows = !fits_now(ui);
    let rgba = draw(window, at.size.0, at.size.1);
    Ok(RenderedPage { rgba, overflows })
}

/// Renders one prepared page.
pub fn render_rgba(
    view: &PageView,
    images: &Images,
    width: u32,
    height: u32,
) -> anyhow::Result<Vec<u8>> {
    with_preview(width, height, |window, ui| {
        apply(ui, view, images)?;
        Ok(draw(window, width, height))
    })
}

/// Draws what the window holds now, as RGBA (not premultiplied).
fn draw(window: &MinimalSoftwareWindow, width: u32, height: u32) -> Vec<u8> {
    window.request_redraw();
    slint::platform::update_timers_and_animations();
    let mut buffer = vec![PremultipliedRgbaColor::default(); (width * height) as usize];
    window.draw_if_needed(|renderer| {
        renderer.render(&mut buffer, width as usize);
    });
    unpremultiply(&buffer)
}

fn unpremultiply(buffer: &[PremultipliedRgbaColor]) -> Vec<u8> {
    buffer
        .iter()
        .flat_map(|p| {
            let channel = |c: u8| {
                if p.alpha == 0 {
                    0
                } else {
                    (u16::from(c) * 255 / u16::from(p.alpha)) as u8
                }
            };
            [channel(p.red), channel(p.green), channel(p.blue), p.alpha]
        })
        .collect()
}

/// A headless window of the whole UI, for tests and tools that drive a
/// [`super::Controller`] and look at the pixels.
pub struct HeadlessWindow {
    window: Rc<MinimalSoftwareWindow>,
    ui: AppWindow,
}

impl HeadlessWindow {
    pub fn new(width: u32, height: u32) -> anyhow::Result<Self> {
        let (window, ui) = new_window(width, height)?;
        Ok(HeadlessWindow { window, ui })
    }

    pub fn ui(&self) -> &AppWindow {
        &self.ui
    }

    /// Runs due timers and draws the whole window: RGBA, not premultiplied.
    pub fn render(&self) -> Vec<u8> {
        let size = self.window.size();
        draw(&self.window, size.width, size.height)
    }
}

/// A screen with no display: the controller drives a headless window, and
/// every new frame is written to `frame_path` as PNG (through a temporary
/// file and a rename, so a reader never sees half a frame). Returns when the
/// event loop is asked to quit.
pub fn run_to_png(
    width: u32,
    height: u32,
    frame_path: &Path,
    start: impl FnOnce(&AppWindow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (window, ui) = new_window(width, height)?;
    let shared = install()?;
    let path: PathBuf = frame_path.to_owned();
    *shared.sink.borrow_mut() = Some((
        window,
        Box::new(move |buffer, width, height| {
            if let Err(e) = write_png(&path, &unpremultiply(buffer), width, height) {
                tracing::warn!("cannot write the frame to {}: {e:#}", path.display());
            }
        }),
    ));
    start(&ui)?;
    slint::run_event_loop().context("running the headless event loop")?;
    *shared.sink.borrow_mut() = None;
    Ok(())
}

fn write_png(path: &Path, rgba: &[u8], width: u32, height: u32) -> anyhow::Result<()> {
    let png = super::png_fast(rgba, width, height)?;
    crate::files::write_atomically(path, &png)
        .with_context(|| format!("writing {}", path.display()))
}
