//! Previews: a page of what a screen holds, rendered to PNG with no display.
//! Reads the store (read-only) and hands a `PageView` to the UI bridge.

use anyhow::{Context, bail};
use time::OffsetDateTime;

use crate::config::Config;
use crate::protocol::{Envelope, Notice};
use crate::schedule::{self, Rotation};
use crate::store::Store;
use crate::ui;

/// Renders notice `id` (its newest version), or without an id what the
/// rotation would show first at `now`, as a PNG of `size` pixels.
pub fn render_from_store(
    config: &Config,
    id: Option<&str>,
    page: usize,
    size: (u32, u32),
    now: OffsetDateTime,
) -> anyhow::Result<Vec<u8>> {
    let store = Store::open_read_only(&config.store.path)?;
    let catalog = store.load_catalog()?;
    let (id, version) = match id {
        Some(id) => {
            let item = catalog
                .items
                .get(id)
                .with_context(|| format!("the store holds no notice {id:?}"))?;
            (item.id.clone(), item.version)
        }
        None => {
            let active = schedule::active_set(catalog.items.values(), &config.screen.id, now);
            Rotation::new()
                .next(&active)
                .context("nothing is active on this screen now")?
        }
    };
    let envelope = store
        .envelope(&id, version)?
        .context("the notice's envelope is missing")?;
    let notice = notice_of(&envelope)?;
    let cache = crate::media::MediaCache::reader(&config.store.media_dir);
    let images = ui::load_images(&notice, &cache, size.0, size.1).0;
    let pages = ui::render_notice(&notice, &images, size.0, size.1, now, None)?;
    if page == 0 || page > pages.len() {
        bail!("{id} has {} page(s) at {}x{}", pages.len(), size.0, size.1);
    }
    ui::png(&pages[page - 1].rgba, size.0, size.1)
}

/// The notice inside an envelope the store accepted earlier.
pub fn notice_of(envelope: &[u8]) -> anyhow::Result<Notice> {
    let envelope = Envelope::parse(envelope).map_err(|e| anyhow::anyhow!("{e}"))?;
    let payload = envelope
        .payload_bytes()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Notice::from_payload(&payload).map_err(|e| anyhow::anyhow!("{e}"))
}
