//! 发布 → every screen of a loopback fleet holds it: ten real `Daemon`s
//! in this process, trusting what `office::console::trust` prints (the
//! enrolled people's keys and the operator key), on the bench's Mosquitto;
//! each round writes an approved draft signed by the bench's staff and
//! supervisor keys exactly as their browsers sign (DSSE over the payload
//! bytes), then times from the 发布 POST until all ten catalogs hold the
//! new notice.

use std::time::{Duration, Instant};

use gongkai::config::Config;
use gongkai::daemon::Daemon;
use gongkai::office::config::ServerConfig;
use gongkai::office::console::compose;
use gongkai::protocol::SecretKey;
use gongkai::protocol::envelope::{Envelope, NOTICE_TYPE};
use gongkai::store::office::{DraftKind, DraftState, OfficeStore};
use gongkai::workdays::Calendar;
use time::OffsetDateTime;

use super::{Session, client, ms};
use crate::common::{self, OfficeServer};

/// Screens of the loopback fleet.
pub const SCREENS: usize = 10;
/// Publishes measured.
const ROUNDS: usize = 20;
/// How long one round may take before the bench gives up on it.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// Starts the fleet, publishes `ROUNDS` notices through the console and
/// prints how long each took to reach every screen.
pub async fn run(office: &OfficeServer, broker: &str, scope: &str, session: &Session) {
    let config = ServerConfig::load(&office.config).unwrap();
    let trust = gongkai::office::console::trust(&config).unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..SCREENS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut daemons = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        let text = format!(
            "[screen]\nid = \"bench-fleet-{n:02}\"\ncommunity = \"{scope}\"\n[mqtt]\nurl = \"{broker}\"\n\
             {trust}[store]\npath = \"{}\"\n[display]\ndwell_seconds = 2\n",
            dir.path().join("screen.db").display()
        );
        let config = Config::parse(&text).unwrap_or_else(|p| panic!("{p}\n{text}"));
        daemons.push(Daemon::start(config).await.unwrap());
    }
    for daemon in &daemons {
        common::wait_connected(daemon).await;
    }
    let http = client(office);
    let mut store = OfficeStore::open(&office.database).unwrap();
    let calendar = Calendar::national();
    let (mut reached, mut answered) = (Vec::new(), Vec::new());
    // Round 0 is the scope's first publish, with no manifest retained yet:
    // reported apart, since only it waits out the retained read's grace.
    for round in 0..=ROUNDS {
        let id = format!("bench-publish-{round:02}");
        let draft = approved_draft(&mut store, office, scope, &id, &calendar, session);
        let sent = Instant::now();
        let answer = http
            .post(format!("{}/console/drafts/{draft}/publish", office.url))
            .header("cookie", &session.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={}", session.csrf))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        answered.push(sent.elapsed());
        assert_eq!(
            status,
            303,
            "publish {id}: {}",
            answer.text().await.unwrap_or_default()
        );
        for daemon in &daemons {
            let mut catalog = daemon.catalog.clone();
            let held = catalog.wait_for(|c| c.items.values().any(|i| i.id == id && i.version == 1));
            tokio::time::timeout(ROUND_LIMIT, held)
                .await
                .unwrap_or_else(|_| panic!("{id} did not reach every screen"))
                .unwrap();
        }
        reached.push(sent.elapsed());
    }
    let (first, first_answer) = (reached.remove(0), answered.remove(0));
    let at = |times: &mut Vec<Duration>, q: f64| {
        times.sort();
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)]
    };
    println!(
        "console: 发布 → all {SCREENS} screens of a loopback fleet hold it: p50 {:.0} ms  p95 {:.0} ms  max {:.0} ms \
         ({ROUNDS} publishes; the 发布 answer itself p50 {:.0} ms; the scope's first publish, no manifest yet: {:.0} ms, answered in {:.0} ms)",
        ms(at(&mut reached, 0.5)),
        ms(at(&mut reached, 0.95)),
        ms(*reached.last().unwrap()),
        ms(at(&mut answered, 0.5)),
        ms(first),
        ms(first_answer),
    );
    for daemon in daemons {
        daemon.shutdown().await;
    }
}

/// A draft of `scope` with notice `id`, approved: the payload compose
/// makes, signed by the staff and the supervisor key as the browsers sign
/// it. Returns its id.
fn approved_draft(
    store: &mut OfficeStore,
    office: &OfficeServer,
    scope: &str,
    id: &str,
    calendar: &Calendar,
    session: &Session,
) -> i64 {
    let now = OffsetDateTime::now_utc();
    let mut form = compose::new_form(scope, now);
    form.notice_id = id.to_owned();
    form.title = format!("发布测试 {id}");
    form.publisher = "历下区示范社区居民委员会".into();
    form.contact = "监督电话：0531-00000000".into();
    form.blocks[0].text = "现将有关事项公开如下，请居民监督。".into();
    let context = compose::Context {
        public_url: &office.url,
        version: 1,
        now,
        calendar,
    };
    let (_, payload) = compose::build(&form, &context).unwrap();
    let json = serde_json::to_string(&form).unwrap();
    let signature = |key: &SecretKey| {
        serde_json::to_string(&Envelope::sign_new(NOTICE_TYPE, &payload, key).signatures[0])
            .unwrap()
    };
    let draft = store
        .create_draft(
            scope,
            id,
            1,
            DraftKind::Notice,
            &json,
            Some(&payload),
            "bench",
        )
        .unwrap()
        .unwrap();
    assert!(
        store
            .update_draft(
                draft,
                DraftState::Editing,
                DraftState::Approved,
                &json,
                Some(&payload),
                Some(&signature(&session.staff_key)),
                Some(&signature(&session.supervisor_key)),
                None,
            )
            .unwrap()
    );
    draft
}
