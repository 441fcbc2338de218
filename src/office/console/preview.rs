//! Previews of a draft exactly as screens page it: the screens' own Slint
//! renderer, headless: the rotation at 1920×1080 and 1080×1920
//! (`ui::render_notice_page`), and the notice as a kiosk opens it, with its
//! bar of buttons, at a kiosk's 1920×1080 (`ui::render_kiosk_page`).
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
    /// A kiosk's notice view, at the size a kiosk has by default.
    Kiosk,
}

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        match s {
            "landscape" => Some(Size::Landscape),
            "portrait" => Some(Size::Portrait),
            "kiosk" => Some(Size::Kiosk),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Size::Landscape => "landscape",
            Size::Portrait => "portrait",
            Size::Kiosk => "kiosk",
        }
    }

    pub fn pixels(self) -> (u32, u32) {
        match self {
            Size::Landscape => (1920, 1080),
            Size::Portrait => (1080, 1920),
            // `[display]`'s default width and height, a kiosk's too.
            Size::Kiosk => (1920, 1080),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Size::Landscape => "横屏 1920×1080",
            Size::Portrait => "竖屏 1080×1920",
            Size::Kiosk => "触摸屏打开公告 1920×1080",
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
                let mut decoded = None;
                for job in rx {
                    let result = render(&job.notice, &job.images, job.size, job.page, &mut decoded);
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

/// The images the last render decoded, with what they were decoded for:
/// the notice's media (id and hash), the images' hashes and the size. Page after page
/// of one draft decodes them once.
type Decoded = Option<((Vec<String>, Vec<String>, (u32, u32)), crate::ui::Images)>;

fn render(
    notice: &Notice,
    images: &[(String, Vec<u8>)],
    size: Size,
    page: usize,
    decoded: &mut Decoded,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let (width, height) = size.pixels();
    let key = (
        notice
            .media
            .iter()
            .map(|m| format!("{} {}", m.id, m.sha256))
            .collect::<Vec<_>>(),
        images
            .iter()
            .map(|(sha256, _)| sha256.clone())
            .collect::<Vec<_>>(),
        (width, height),
    );
    let images = match decoded {
        Some((held, images)) if *held == key => images.clone(),
        _ => {
            let dir = tempfile::tempdir()?;
            for (sha256, bytes) in images {
                crate::files::write_atomically(&dir.path().join(sha256), bytes)?;
            }
            let cache = MediaCache::reader(dir.path());
            let images = crate::ui::load_images(notice, &cache, width, height).0;
            *decoded = Some((key, images.clone()));
            images
        }
    };
    let draw = match size {
        Size::Landscape | Size::Portrait => crate::ui::render_notice_page,
        Size::Kiosk => crate::ui::render_kiosk_page,
    };
    let (drawn, count) = draw(
        notice,
        &images,
        (width, height),
        OffsetDateTime::now_utc(),
        page,
    )?;
    Ok((crate::ui::png_fast(&drawn.rgba, width, height)?, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_is_named_in_its_address() {
        for size in [Size::Landscape, Size::Portrait, Size::Kiosk] {
            assert_eq!(Size::parse(size.as_str()), Some(size));
        }
        assert_eq!(Size::parse("square"), None);
    }
}
