//! Previews: a page of what a screen holds, rendered to PNG with no display.
//! Reads the store (read-only) and hands a `PageView` to the UI bridge.

use anyhow::{Context, bail};
use time::OffsetDateTime;

use crate::config::Config;
use crate::protocol::{Verified, verify_message};
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
    // Draw only what the screen itself would accept today: the stored copy
    // matched its hash above, and its signatures must still verify.
    let topics = config.topics();
    let verified = verify_message(&topics, &topics.notice(&id), &envelope, &config.trust)
        .map_err(|e| anyhow::anyhow!("refused: the stored copy of {id} does not verify: {e}"))?;
    let Verified::Notice(verified) = verified else {
        bail!("the store holds a manifest under notice {id}");
    };
    let notice = verified.notice;
    let cache = crate::media::MediaCache::reader(&config.store.media_dir);
    let images = ui::load_images(&notice, &cache, size.0, size.1).0;
    let (page, _count) = ui::render_notice_page(&notice, &images, size, now, page)?;
    ui::png(&page.rgba, size.0, size.1)
}
