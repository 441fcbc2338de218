//! Previews: a page of what a screen holds, rendered to PNG with no display.
//! Reads the store (read-only) and hands a `PageView` to the UI bridge.

use anyhow::{Context, bail};
use time::OffsetDateTime;

use crate::config::Config;
use crate::protocol::Verified;
use crate::schedule::{self, Item, Rotation};
use crate::store::{Catalog, Store};
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
    let key = match id {
        Some(id) => find(&catalog, &config.screen.community, id)?.key(),
        None => {
            let active = schedule::active_set(catalog.items.values(), &config.audience(), now);
            Rotation::new()
                .next(&active)
                .context("nothing is active on this screen now")?
        }
    };
    let id = &key.id;
    let envelope = store
        .envelope(&key.scope, id, key.version)?
        .context("the notice's envelope is missing")?;
    // Draw only what the screen itself would accept today: the stored copy
    // matched its hash above, and its signatures must still verify.
    let follows = config.follows();
    let topic = follows
        .get(&key.scope)
        .map(|s| s.space.notice(id))
        .with_context(|| format!("the screen no longer follows scope {}", key.scope))?;
    let verified = follows
        .verify(&topic, &envelope)
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

/// The notice `id` names: `scope/id`, or an id of the home community, or
/// the one notice of that id in any scope followed.
fn find<'a>(catalog: &'a Catalog, home: &str, id: &str) -> anyhow::Result<&'a Item> {
    if let Some((scope, id)) = id.split_once('/') {
        return catalog
            .item(scope, id)
            .with_context(|| format!("the store holds no notice {id:?} of scope {scope:?}"));
    }
    if let Some(item) = catalog.item(home, id) {
        return Ok(item);
    }
    let mut found = catalog.items.values().filter(|i| i.id == id);
    match (found.next(), found.next()) {
        (Some(item), None) => Ok(item),
        (Some(_), Some(_)) => bail!("more than one scope has a notice {id:?}: name it as scope/id"),
        (None, _) => bail!("the store holds no notice {id:?}"),
    }
}
