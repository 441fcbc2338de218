//! The rotation task: walks the active set on the clock (or at the UI's
//! pace) and says what is showing. It reads the catalog from its watch and
//! never touches the store; the decisions are `schedule`'s.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::MAX_SLOT_DWELLS;
use crate::protocol::printable;
use crate::schedule::{self, Audience, Display, QuietWindow, Rotation};
use crate::store::{Catalog, NoticeRef};

/// The rotation task: walks the active set, one slot per notice, `dwell`
/// per slot (or until the UI, when it paces the rotation, says the slot's
/// pages are done), cut short by an urgent interruption or when the notice
/// shown leaves the active set.
pub(super) struct RotationTask {
    pub(super) screen: Audience,
    /// Quiet hours: no slot, and the display dark, unless an urgent notice
    /// is active.
    pub(super) quiet: Vec<QuietWindow>,
    pub(super) display: watch::Sender<Display>,
    /// Beaten every second while the task runs: headless, the watchdog's
    /// pings depend on it.
    pub(super) heartbeat: crate::watchdog::Heartbeat,
    /// Each slot that ends, for the proof-of-play chain.
    pub(super) plays: mpsc::UnboundedSender<crate::store::plays::Play>,
    pub(super) dwell: Duration,
    /// The UI's reports: pages shown, slots done, kiosk plays.
    pub(super) pacer: Option<mpsc::UnboundedReceiver<super::FromUi>>,
    pub(super) catalog: watch::Receiver<Catalog>,
    pub(super) showing: watch::Sender<Option<schedule::Key>>,
    pub(super) cancel: CancellationToken,
}

impl RotationTask {
    pub(super) async fn run(self) {
        let RotationTask {
            screen,
            quiet,
            display,
            heartbeat,
            plays,
            dwell,
            mut pacer,
            mut catalog,
            showing,
            cancel,
        } = self;
        let mut rotation = Rotation::new();
        let mut idle_logged = false;
        let mut beat = tokio::time::interval(crate::watchdog::BEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            heartbeat.beat();
            let now = OffsetDateTime::now_utc();
            let (slot, count, deadline, title, dark) = {
                let cat = catalog.borrow_and_update();
                let active = schedule::active_set(cat.items.values(), &screen, now);
                let dark = schedule::display_state(&quiet, &active, now) == Display::Quiet;
                // Dark: nothing is shown, so no slot is taken (and no play).
                let slot = if dark { None } else { rotation.next(&active) };
                let title = slot
                    .as_ref()
                    .and_then(|k| cat.items.get(&NoticeRef::new(&k.scope, &k.id)))
                    .map(|i| format!("[{}] {}", i.category.label_zh(), printable(&i.title)));
                let deadline = [
                    schedule::next_deadline(cat.items.values(), &screen, now),
                    schedule::next_quiet_change(&quiet, now),
                ]
                .into_iter()
                .flatten()
                .min();
                (slot, active.len(), deadline, title, dark)
            };
            let state = if dark { Display::Quiet } else { Display::On };
            if display.send_if_modified(|d| std::mem::replace(d, state) != state) {
                tracing::info!(target: "rotation", "display {}", state.as_str());
            }
            match &slot {
                Some(key) => {
                    idle_logged = false;
                    let scope = match key.scope == screen.community {
                        true => String::new(),
                        false => format!(" of {}", key.scope),
                    };
                    tracing::info!(target: "rotation", "showing {} v{}{scope} of {count} active: {}", key.id, key.version, title.unwrap_or_default());
                }
                None if dark => {}
                None if !idle_logged => {
                    idle_logged = true;
                    tracing::info!(target: "rotation", "nothing to show");
                }
                None => {}
            }
            showing.send_replace(slot.clone());
            // When the slot began, and (paced by a UI) when its first page
            // reached the glass and how many pages did.
            let paced = pacer.is_some();
            let mut on_glass: Option<(OffsetDateTime, tokio::time::Instant)> =
                (!paced).then(|| (OffsetDateTime::now_utc(), tokio::time::Instant::now()));
            let mut pages_shown: u32 = if paced { 0 } else { 1 };
            let slot_end = tokio::time::Instant::now()
                + if pacer.is_some() {
                    dwell * MAX_SLOT_DWELLS
                } else {
                    dwell
                };
            let window_change = deadline.map(|d| {
                let wait = (d - now).try_into().unwrap_or(Duration::ZERO);
                tokio::time::Instant::now() + wait
            });
            // Wait out the slot unless something must cut it short.
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = beat.tick() => heartbeat.beat(),
                    _ = tokio::time::sleep_until(slot_end), if slot.is_some() => break,
                    from_ui = recv_opt(&mut pacer) => match from_ui {
                        Some(super::FromUi::SlotPage { key, page }) if Some(&key) == slot.as_ref() => {
                            on_glass.get_or_insert_with(|| (OffsetDateTime::now_utc(), tokio::time::Instant::now()));
                            pages_shown = pages_shown.max(page as u32 + 1);
                        }
                        // The UI showed every page of this slot's notice.
                        Some(super::FromUi::SlotDone(key)) if Some(&key) == slot.as_ref() => break,
                        Some(super::FromUi::Touch(play)) => {
                            let _ = plays.send(play);
                        }
                        // About an earlier slot.
                        Some(_) => {}
                        // The UI is gone: fall back to the dwell time.
                        None => pacer = None,
                    },
                    _ = sleep_until_opt(window_change) => break,
                    changed = catalog.changed() => {
                        if changed.is_err() { return; }
                        let cat = catalog.borrow_and_update();
                        let now = OffsetDateTime::now_utc();
                        let active = schedule::active_set(cat.items.values(), &screen, now);
                        let still_shown = slot.as_ref().is_some_and(|k| active.iter().any(|i| i.key() == *k));
                        let lit = dark && schedule::display_state(&quiet, &active, now) == Display::On;
                        if rotation.should_interrupt(&active) || (!still_shown && !dark) || lit {
                            break;
                        }
                    }
                }
            }
            // The slot was on screen: one record of the play chain, from its
            // first page on the glass, with the pages that were. A slot the
            // UI never showed (a kiosk in use, a notice that could not be
            // read) was seen by nobody and is not a play. Without a UI
            // nothing is paged: the slot counts as one page for its dwell.
            if let (Some(key), Some((started_at, started))) = (&slot, on_glass) {
                let _ = plays.send(crate::store::plays::Play {
                    scope: key.scope.clone(),
                    notice_id: key.id.clone(),
                    version: key.version,
                    started_at: crate::protocol::plays::millisecond_utc(started_at),
                    duration_ms: started.elapsed().as_millis() as u64,
                    pages_shown: pages_shown.max(1),
                    trigger: crate::protocol::plays::Trigger::Rotation,
                });
            }
        }
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Category, Priority, Status};
    use crate::schedule::Item;

    fn item(id: &str, priority: Priority) -> Item {
        let now = OffsetDateTime::now_utc();
        Item {
            scope: "c".into(),
            id: id.into(),
            version: 1,
            category: Category::Affairs,
            priority,
            status: Status::Active,
            title: id.into(),
            publisher: String::new(),
            valid_from: now - time::Duration::hours(1),
            valid_until: now + time::Duration::days(1),
            screens: vec![],
            communities: vec![],
        }
    }

    fn catalog(items: &[Item]) -> Catalog {
        Catalog {
            items: items
                .iter()
                .map(|i| (NoticeRef::new(&i.scope, &i.id), i.clone()))
                .collect(),
            ..Catalog::default()
        }
    }

    /// The rotation on virtual time, paced by a UI: a slot lasts until the UI
    /// says its pages are done (however long that takes), `high` notices come
    /// twice per cycle, an urgent notice cuts the slot short at once, and a
    /// UI that says nothing still gets a new slot after `MAX_SLOT_DWELLS`.
    #[tokio::test(start_paused = true)]
    async fn rotation_paced_by_the_ui_on_virtual_time() {
        let dwell = Duration::from_secs(12);
        let (catalog_tx, catalog_rx) = watch::channel(catalog(&[
            item("a", Priority::Normal),
            item("b", Priority::High),
            item("c", Priority::Normal),
        ]));
        let (showing_tx, mut showing_rx) = watch::channel(None);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            RotationTask {
                screen: Audience::new("lobby", "c"),
                quiet: Vec::new(),
                display: watch::channel(Display::On).0,
                heartbeat: crate::watchdog::Heartbeat::new(),
                plays: mpsc::unbounded_channel().0,
                dwell,
                pacer: Some(done_rx),
                catalog: catalog_rx,
                showing: showing_tx,
                cancel: cancel.clone(),
            }
            .run(),
        );
        let mut next = async || -> String {
            showing_rx.changed().await.unwrap();
            showing_rx.borrow_and_update().as_ref().unwrap().id.clone()
        };
        let mut order = vec![next().await];
        for _ in 0..7 {
            let id = order.last().unwrap().clone();
            // A notice of three pages: the UI takes 3 dwells, then says so.
            tokio::time::sleep(dwell * 3).await;
            done_tx
                .send(super::super::FromUi::SlotDone(schedule::Key {
                    scope: "c".into(),
                    id,
                    version: 1,
                }))
                .unwrap();
            order.push(next().await);
        }
        let b = order.iter().filter(|id| *id == "b").count();
        let a = order.iter().filter(|id| *id == "a").count();
        assert_eq!(b, 2 * a, "high twice as often: {order:?}");

        // An urgent notice arrives mid-slot: it is shown at once.
        let started = tokio::time::Instant::now();
        catalog_tx.send_modify(|c| {
            let urgent = item("u", Priority::Urgent);
            c.items.insert(NoticeRef::new("c", "u"), urgent);
        });
        assert_eq!(next().await, "u");
        assert!(started.elapsed() < Duration::from_millis(10));

        // The UI says nothing: the slot still ends, after MAX_SLOT_DWELLS.
        let started = tokio::time::Instant::now();
        let after = next().await;
        assert_ne!(after, "u", "urgent takes every other slot, not every slot");
        assert_eq!(started.elapsed(), dwell * MAX_SLOT_DWELLS);
        cancel.cancel();
        task.await.unwrap();
    }

    /// The play chain's records of a rotation paced by a UI, on virtual
    /// time: the pages the UI reported and the time from the first one on
    /// the glass; a slot the UI never showed is no play; a notice opened on
    /// the kiosk is a touch play of its own.
    #[tokio::test(start_paused = true)]
    async fn plays_count_the_pages_the_ui_showed() {
        use super::super::FromUi;
        use crate::protocol::plays::Trigger;
        let dwell = Duration::from_secs(12);
        let (_catalog_tx, catalog_rx) = watch::channel(catalog(&[
            item("a", Priority::Normal),
            item("b", Priority::Normal),
        ]));
        let (showing_tx, mut showing_rx) = watch::channel(None);
        let (ui_tx, ui_rx) = mpsc::unbounded_channel();
        let (plays_tx, mut plays_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            RotationTask {
                screen: Audience::new("lobby", "c"),
                quiet: Vec::new(),
                display: watch::channel(Display::On).0,
                heartbeat: crate::watchdog::Heartbeat::new(),
                plays: plays_tx,
                dwell,
                pacer: Some(ui_rx),
                catalog: catalog_rx,
                showing: showing_tx,
                cancel: cancel.clone(),
            }
            .run(),
        );
        let mut next = async || -> schedule::Key {
            showing_rx.changed().await.unwrap();
            showing_rx.borrow_and_update().clone().unwrap()
        };
        // The first slot: loaded after 2 s, three pages of 12 s each.
        let first = next().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for page in 0..3 {
            ui_tx
                .send(FromUi::SlotPage {
                    key: first.clone(),
                    page,
                })
                .unwrap();
            tokio::time::sleep(dwell).await;
        }
        ui_tx.send(FromUi::SlotDone(first.clone())).unwrap();
        let second = next().await;
        let play = plays_rx.recv().await.unwrap();
        assert_eq!(
            (play.notice_id.as_str(), play.pages_shown),
            (first.id.as_str(), 3)
        );
        assert_eq!(play.duration_ms, 36_000, "from the first page on the glass");
        assert_eq!(play.trigger, Trigger::Rotation);
        // The second slot never reaches the glass (the kiosk is in use);
        // meanwhile a resident reads a notice for 40 s.
        let touch = crate::store::plays::Play {
            scope: "c".into(),
            notice_id: "b".into(),
            version: 1,
            started_at: "2026-10-08T01:02:03.456Z".into(),
            duration_ms: 40_000,
            pages_shown: 2,
            trigger: Trigger::Touch,
        };
        ui_tx.send(FromUi::Touch(touch.clone())).unwrap();
        assert_eq!(plays_rx.recv().await.unwrap(), touch);
        ui_tx.send(FromUi::SlotDone(second)).unwrap();
        let _third = next().await;
        assert!(plays_rx.try_recv().is_err(), "a slot nobody saw is no play");
        cancel.cancel();
        task.await.unwrap();
    }
}
