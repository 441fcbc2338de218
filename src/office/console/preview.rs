//! Previews of a draft exactly as screens page it: the screens' own Slint
//! renderer (`ui::render_notice_page`), headless, at 1920×1080 and
//! 1080×1920.
//!
//! Slint keeps one platform per process and draws on the thread that first
//! rendered, so one thread of the console's own does every render, taking
//! jobs from a channel; handlers wait for their answer. Images come from
//! the office's database, written for each render into a temporary folder
//! laid out as a screen's media cache.

use std::sync::mpsc as std_mpsc;

use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::media::MediaCache;
use crate::protocol::Notice;

/// The sizes a preview is drawn at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Landscape,
    Portrait,
}

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        match s {
            "landscape" => Some(Size::Landscape),
            "portrait" => Some(Size::Portrait),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Size::Landscape => "landscape",
            Size::Portrait => "portrait",
        }
    }

    pub fn pixels(self) -> (u32, u32) {
        match self {
            Size::Landscape => (1920, 1080),
            Size::Portrait => (1080, 1920),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Size::Landscape => "横屏 1920×1080",
            Size::Portrait => "竖屏 1080×1920",
        }
    }
}

/// One render: the notice, its images (sha256 and bytes), the size and the
/// page (from 1); answered with the PNG and the notice's page count.
struct Job {
    notice: Notice,
    images: Vec<(String, Vec<u8>)>,
    size: Size,
    page: usize,
    answer: oneshot::Sender<anyhow::Result<(Vec<u8>, usize)>>,
}

/// The handle on the render thread; clones share it.
#[derive(Clone)]
pub struct Previewer {
    jobs: std_mpsc::Sender<Job>,
}

impl Previewer {
    /// Starts the render thread (Slint is set up at the first render).
    pub fn start() -> std::io::Result<Previewer> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("console-preview".into())
            .spawn(move || {
                for job in rx {
                    let result = render(&job.notice, &job.images, job.size, job.page);
                    let _ = job.answer.send(result);
                }
            })?;
        Ok(Previewer { jobs })
    }

    /// Page `page` of `notice` as a PNG, and how many pages it has.
    pub async fn render(
        &self,
        notice: Notice,
        images: Vec<(String, Vec<u8>)>,
        size: Size,
        page: usize,
    ) -> anyhow::Result<(Vec<u8>, usize)> {
        let (answer, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                notice,
                images,
                size,
                page,
                answer,
            })
            .map_err(|_| anyhow::anyhow!("the preview thread is gone"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the preview thread is gone"))?
    }
}

fn render(
    notice: &Notice,
    images: &[(String, Vec<u8>)],
    size: Size,
    page: usize,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let dir = tempfile::tempdir()?;
    for (sha256, bytes) in images {
        crate::files::write_atomically(&dir.path().join(sha256), bytes)?;
    }
    let cache = MediaCache::reader(dir.path());
    let (width, height) = size.pixels();
    let images = crate::ui::load_images(notice, &cache, width, height).0;
    let (drawn, count) = crate::ui::render_notice_page(
        notice,
        &images,
        (width, height),
        OffsetDateTime::now_utc(),
        page,
    )?;
    Ok((crate::ui::png(&drawn.rgba, width, height)?, count))
}
