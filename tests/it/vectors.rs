//! Every case of the independent implementation's test vectors, and the
//! ordering sequence, through the same code the daemon runs.

use std::path::PathBuf;

use gongkai::protocol::{Follows, PublicKey, TopicSpace, TrustPolicy, Verified, verify_message};
use gongkai::store::{Incoming, Outcome, Store};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors")
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn policy() -> TrustPolicy {
    let keys = json(dir().join("keys.json"));
    let key =
        |role: &str| PublicKey::from_base64(keys[role]["public_b64"].as_str().unwrap()).unwrap();
    TrustPolicy {
        office: vec![key("office")],
        supervisor: vec![key("supervisor")],
        ..TrustPolicy::default()
    }
}

fn space() -> TopicSpace {
    let vectors = json(dir().join("vectors.json"));
    TopicSpace::new("gongkai/v1", vectors["screen_community"].as_str().unwrap())
}

#[test]
fn key_ids_are_the_sha256_of_the_raw_public_key() {
    let keys = json(dir().join("keys.json"));
    for role in ["office", "supervisor", "stranger"] {
        let seed: [u8; 32] = hex::decode(keys[role]["seed_hex"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let secret = gongkai::protocol::SecretKey::from_seed(seed);
        assert_eq!(
            secret.public().to_base64(),
            keys[role]["public_b64"].as_str().unwrap()
        );
        assert_eq!(
            secret.public().key_id().0,
            keys[role]["keyid"].as_str().unwrap()
        );
    }
}

#[test]
fn every_vector_gets_its_verdict_and_reason() {
    let vectors = json(dir().join("vectors.json"));
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    let (space, policy) = (space(), policy());
    let mut failures = Vec::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let bytes = std::fs::read(dir().join(file)).unwrap();
        let verdict = verify_message(&space, case["topic"].as_str().unwrap(), &bytes, &policy);
        let reason = case["reason"].as_str().unwrap().to_lowercase();
        match (case["expect"].as_str().unwrap(), &verdict) {
            ("accept", Ok(_)) => {}
            ("reject", Err(r)) if r.to_string().to_lowercase().contains(&reason) => {}
            (expect, _) => failures.push(format!(
                "{file}: expected {expect} ({reason}), got {verdict:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn urgent_office_only_is_accepted_where_the_policy_allows_it() {
    let bytes = std::fs::read(dir().join("18_urgent_office_only.json")).unwrap();
    let topic = "gongkai/v1/lixia-demo/notices/water-cut-0612";
    let relaxed = TrustPolicy {
        urgent_office_only: true,
        ..policy()
    };
    assert!(matches!(
        verify_message(&space(), topic, &bytes, &relaxed),
        Ok(Verified::Notice(_))
    ));
    // Relaxing urgent notices does not relax ordinary ones.
    let ordinary = std::fs::read(dir().join("02_office_only.json")).unwrap();
    let topic = "gongkai/v1/lixia-demo/notices/2026q3-finance-001";
    assert!(verify_message(&space(), topic, &ordinary, &relaxed).is_err());
    let by_category = TrustPolicy {
        office_only_categories: vec![gongkai::protocol::Category::Finance],
        ..policy()
    };
    assert!(verify_message(&space(), topic, &ordinary, &by_category).is_ok());

    // The store keeps whether a supervisor's signature verified: the review
    // mark (section 4) for the dual-signed notice, none for the urgent one.
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("screen.db")).unwrap();
    let follows = Follows::home_only(space(), relaxed);
    for (file, topic, reviewed) in [
        (
            "18_urgent_office_only.json",
            "gongkai/v1/lixia-demo/notices/water-cut-0612",
            false,
        ),
        (
            "01_valid_dual.json",
            "gongkai/v1/lixia-demo/notices/2026q3-finance-001",
            true,
        ),
    ] {
        let bytes = std::fs::read(dir().join(file)).unwrap();
        let Outcome::Accepted(item) = commit_one(&mut store, &follows, topic, bytes) else {
            panic!("{file} is accepted under the relaxed policy");
        };
        assert_eq!(
            store
                .reviewed("lixia-demo", &item.id, item.version)
                .unwrap(),
            reviewed,
            "{file}"
        );
    }
}

#[test]
fn the_ordering_sequence_leaves_the_expected_state() {
    let seq_dir = dir().join("sequence");
    let sequence = json(seq_dir.join("sequence.json"));
    let topic = sequence["topic"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("screen.db")).unwrap();
    let (space, policy) = (space(), policy());
    let now = time::macros::datetime!(2026-10-10 12:00 +08:00);
    let expected_states = [
        ("accept", Some((2, true))),
        ("ignore", Some((2, true))),
        ("reject", Some((2, true))),
        ("accept", Some((3, false))),
        ("accept", Some((4, true))),
    ];
    let steps = sequence["steps"].as_array().unwrap();
    assert_eq!(steps.len(), expected_states.len());
    for (step, (expect, state)) in steps.iter().zip(expected_states) {
        let file = step["file"].as_str().unwrap();
        assert_eq!(step["expect"].as_str().unwrap(), expect, "{file}");
        let bytes = std::fs::read(seq_dir.join(file)).unwrap();
        let verdict = verify_message(&space, topic, &bytes, &policy);
        let outcome = store
            .commit(&[Incoming {
                topic: topic.into(),
                bytes,
                verdict,
            }])
            .unwrap()
            .remove(0);
        let kind = match &outcome {
            Outcome::Accepted(_) => "accept",
            Outcome::Replay { .. } | Outcome::Duplicate => "ignore",
            Outcome::Rejected(_) => "reject",
            other => panic!("{file}: {other:?}"),
        };
        assert_eq!(kind, expect, "{file}: {outcome:?}");
        if let Outcome::Rejected(r) = &outcome {
            assert!(r.reason.contains("equivocation"), "{}", r.reason);
        }
        let catalog = store.load_catalog().unwrap();
        let item = catalog.item("lixia-demo", "2026q3-finance-001").unwrap();
        let (version, shown) = state.unwrap();
        assert_eq!(item.version, version, "{file}: {}", step["state_after"]);
        assert_eq!(
            item.is_active(
                &gongkai::schedule::Audience::new("lobby-1", "lixia-demo"),
                now
            ),
            shown,
            "{file}: {}",
            step["state_after"]
        );
    }
    // The withdrawn version stays in the archive.
    assert_eq!(
        store.versions("lixia-demo", "2026q3-finance-001").unwrap(),
        vec![2, 3, 4]
    );
    let catalog = store.load_catalog().unwrap();
    assert_eq!(catalog.rejected, 1);
}

/// Version 1.1's limits (section 3.2): versions at most 2^53 − 1, for notices
/// and manifests, each case applied to a screen that holds nothing, through
/// the verifier and the store as the daemon runs them.
#[test]
fn v1_1_limits_bound_versions_at_2_pow_53_minus_1() {
    let limits = dir().join("v1.1/limits");
    let cases = json(limits.join("limits.json"));
    let space = TopicSpace::new("gongkai/v1", cases["screen_community"].as_str().unwrap());
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let topic = case["topic"].as_str().unwrap();
        let bytes = std::fs::read(limits.join(file)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(&tmp.path().join("screen.db")).unwrap();
        let verdict = verify_message(&space, topic, &bytes, &policy());
        let outcome = store
            .commit(&[Incoming {
                topic: topic.into(),
                bytes,
                verdict,
            }])
            .unwrap()
            .remove(0);
        match (case["expect"].as_str().unwrap(), &outcome) {
            ("accept", Outcome::Accepted(item)) => assert_eq!(item.version, (1 << 53) - 1),
            ("reject", Outcome::Rejected(r)) => {
                let reason = case["reason"].as_str().unwrap();
                assert!(r.reason.contains(reason), "{file}: {}", r.reason);
            }
            (expect, other) => panic!("{file}: expected {expect}, got {other:?}"),
        }
    }
}

/// Version 1.1's play chain (section 7): every record's hashed line and hash
/// as the independent implementation made them, the tampered record refused,
/// and the gap answered with the seq to resend from: by the pure verdict,
/// by the screen's store and by the office's database.
#[test]
fn v1_1_play_chain_lines_hashes_tamper_and_gap() {
    use gongkai::protocol::plays::{ChainVerdict, PlayRecord, judge};
    let vectors = json(dir().join("v1.1/plays/chain.json"));
    let chain: Vec<PlayRecord> = vectors["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            let record: PlayRecord = serde_json::from_value(step["record"].clone()).unwrap();
            assert_eq!(record.line(), step["line"].as_str().unwrap());
            assert_eq!(record.expected_hash(), record.hash, "record {}", record.seq);
            record
        })
        .collect();
    let held = |upto: u64| {
        let chain = chain.clone();
        move |seq: u64| (seq <= upto).then(|| chain[seq as usize - 1].hash.clone())
    };
    assert_eq!(
        judge(&chain, 1, held(0)),
        ChainVerdict::Continues {
            new: 4,
            next_seq: 5
        }
    );
    let tampered: PlayRecord =
        serde_json::from_value(vectors["tampered"]["record"].clone()).unwrap();
    assert!(matches!(
        judge(&[tampered], 2, held(1)),
        ChainVerdict::Refused(_)
    ));
    let gap: Vec<PlayRecord> = serde_json::from_value(vectors["gap"]["records"].clone()).unwrap();
    let holds_through = vectors["gap"]["office_holds_through_seq"].as_u64().unwrap();
    assert_eq!(
        judge(&gap, holds_through + 1, held(holds_through)),
        ChainVerdict::Gap { next_seq: 2 }
    );

    // The screen's side: the same plays appended to a real store's chain
    // come out as the vectors' records, seq, prev and hash alike.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("screen.db");
    drop(Store::open(&path).unwrap());
    let mut log = gongkai::store::plays::PlayLog::open(&path).unwrap();
    for record in &chain {
        let appended = log
            .append(gongkai::store::plays::Play {
                scope: record.scope.clone(),
                notice_id: record.notice_id.clone(),
                version: record.version,
                started_at: record.started_at.clone(),
                duration_ms: record.duration_ms,
                pages_shown: record.pages_shown,
                trigger: record.trigger,
            })
            .unwrap();
        assert_eq!(&appended, record);
    }
    assert_eq!(log.records(1, 10).unwrap(), chain);

    // The office's side, on a real database: the chain is stored whole,
    // the tampered record refused (and recorded), the gap answered with
    // the seq to resend from.
    use gongkai::store::office::{OfficeStore, PlaysOutcome};
    let now = time::OffsetDateTime::now_utc();
    let office = |name: &str| OfficeStore::open(&dir.path().join(name)).unwrap();
    let mut whole = office("whole.db");
    assert_eq!(
        whole
            .add_chain_plays("lobby-3", "lixia-demo", &chain, now)
            .unwrap(),
        PlaysOutcome::Stored {
            stored: 4,
            next_seq: 5,
            restarted: None
        }
    );
    assert_eq!(whole.chain_records("lobby-3", 1).unwrap(), chain);
    let holding_one = || {
        let mut store = office(&format!("one-{}.db", uuid::Uuid::now_v7()));
        store
            .add_chain_plays("lobby-3", "lixia-demo", &chain[..1], now)
            .unwrap();
        store
    };
    let mut store = holding_one();
    let tampered: PlayRecord =
        serde_json::from_value(vectors["tampered"]["record"].clone()).unwrap();
    assert!(matches!(
        store
            .add_chain_plays("lobby-3", "lixia-demo", &[tampered], now)
            .unwrap(),
        PlaysOutcome::Refused { .. }
    ));
    assert_eq!(store.play_conflicts().unwrap().len(), 1);
    assert_eq!(store.chain_records("lobby-3", 1).unwrap(), chain[..1]);
    let mut store = holding_one();
    assert_eq!(
        store
            .add_chain_plays("lobby-3", "lixia-demo", &gap, now)
            .unwrap(),
        PlaysOutcome::Gap { next_seq: 2 }
    );
}

/// Version 1.1's commands (section 5), applied in order to one screen on
/// the vectors' clock, with the ids it executed kept as the screen keeps
/// them: a redelivery is ignored, never run twice.
#[test]
fn v1_1_commands_execute_reject_or_ignore_as_the_vectors_say() {
    use gongkai::protocol::command::{CommandKeys, verify_command};
    let commands = dir().join("v1.1/commands");
    let cases = json(commands.join("commands.json"));
    let keys = json(dir().join("v1.1/keys.json"));
    let key =
        |role: &str| PublicKey::from_base64(keys[role]["public_b64"].as_str().unwrap()).unwrap();
    let trust = CommandKeys {
        office: vec![key("office")],
        operator: vec![key("operator")],
    };
    let space = TopicSpace::new("gongkai/v1", cases["screen_community"].as_str().unwrap());
    let screen = cases["screen_id"].as_str().unwrap();
    let now = time::OffsetDateTime::parse(
        cases["now"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut executed = Store::open(&tmp.path().join("screen.db")).unwrap();
    let mut failures = Vec::new();
    let steps = cases["cases"].as_array().unwrap();
    assert_eq!(steps.len(), 16);
    for case in steps {
        let file = case["file"].as_str().unwrap();
        let bytes = std::fs::read(commands.join(file)).unwrap();
        let verdict = verify_command(
            &space,
            screen,
            case["topic"].as_str().unwrap(),
            &bytes,
            &trust,
            now,
        );
        let reason = case["reason"].as_str().unwrap().to_lowercase();
        // Taken once, durably, by the screen's store: a redelivery is ignored.
        let outcome = match &verdict {
            Ok(command) => match executed
                .take_command(
                    &command.id,
                    command.action.as_str(),
                    command.expires_at,
                    now,
                )
                .unwrap()
            {
                true => "execute".to_owned(),
                false => "ignore".to_owned(),
            },
            Err(r) if r.to_string().to_lowercase().contains(&reason) => "reject".to_owned(),
            Err(r) => format!("reject for another reason: {r}"),
        };
        if outcome != case["expect"].as_str().unwrap() {
            failures.push(format!(
                "{file}: expected {}, got {outcome}",
                case["expect"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Version 1.1's `operator` role (section 1) never counts for a notice,
/// even under `urgent_office_only`; an extra operator signature does no harm.
/// (The screen's `[trust] operator` keys are not in its notice policy at all:
/// only commands and manifests take them.)
#[test]
fn v1_1_roles_an_operator_signature_never_counts_for_a_notice() {
    let roles = dir().join("v1.1/roles");
    let cases = json(roles.join("roles.json"));
    let relaxed = TrustPolicy {
        urgent_office_only: true,
        ..policy()
    };
    for case in cases["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let bytes = std::fs::read(roles.join(file)).unwrap();
        for policy in [policy(), relaxed.clone()] {
            let verdict =
                verify_message(&space(), case["topic"].as_str().unwrap(), &bytes, &policy);
            match (case["expect"].as_str().unwrap(), &verdict) {
                ("accept", Ok(_)) => {}
                ("reject", Err(r)) => {
                    let reason = case["reason"].as_str().unwrap();
                    assert!(r.to_string().contains(reason), "{file}: {r}");
                }
                (expect, other) => panic!("{file}: expected {expect}, got {other:?}"),
            }
        }
    }
}

/// A key of `v1.1/keys.json` by its role name there.
fn key_1_1(name: &str) -> PublicKey {
    let keys = json(dir().join("v1.1/keys.json"));
    PublicKey::from_base64(keys[name]["public_b64"].as_str().unwrap()).unwrap()
}

fn keys_1_1(names: &serde_json::Value) -> Vec<PublicKey> {
    names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| key_1_1(n.as_str().unwrap()))
        .collect()
}

fn commit_one(store: &mut Store, follows: &Follows, topic: &str, bytes: Vec<u8>) -> Outcome {
    let verdict = follows.verify(topic, &bytes);
    store
        .commit(&[Incoming {
            topic: topic.into(),
            bytes,
            verdict,
        }])
        .unwrap()
        .remove(0)
}

/// Version 1.1's scopes (section 3.7), in order on one screen of lixia-demo
/// that follows yanshan-street with the street's keys, through the daemon's
/// verifier (`Follows::verify`) and store. The screen first holds the
/// community's own 2026q3-finance-001 (1.0 vector 01), so that the street's
/// notice of the same id (s08) must sit beside it, not replace it.
#[test]
fn v1_1_scopes_are_keyed_by_scope_and_trusted_per_scope() {
    use gongkai::protocol::Scope;
    use gongkai::schedule::Audience;
    let folder = dir().join("v1.1/scopes");
    let cases = json(folder.join("scopes.json"));
    let home = cases["screen_community"].as_str().unwrap();
    let follow = &cases["follows"][0];
    let policy_of = |trust: &serde_json::Value| TrustPolicy {
        office: keys_1_1(&trust["office"]),
        supervisor: keys_1_1(&trust["supervisor"]),
        ..TrustPolicy::default()
    };
    let follows = Follows::new(
        Scope {
            space: TopicSpace::new("gongkai/v1", home),
            policy: policy_of(&cases["home_trust"]),
        },
        vec![Scope {
            space: TopicSpace::new("gongkai/v1", follow["scope"].as_str().unwrap()),
            policy: policy_of(follow),
        }],
    );
    let audience = Audience::new(cases["screen_id"].as_str().unwrap(), home);
    let now = time::OffsetDateTime::parse(
        cases["now"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("screen.db")).unwrap();
    let own = std::fs::read(dir().join("01_valid_dual.json")).unwrap();
    let own_topic = "gongkai/v1/lixia-demo/notices/2026q3-finance-001";
    assert!(matches!(
        commit_one(&mut store, &follows, own_topic, own.clone()),
        Outcome::Accepted(_)
    ));
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let topic = case["topic"].as_str().unwrap();
        let bytes = std::fs::read(folder.join(file)).unwrap();
        match (
            case["expect"].as_str().unwrap(),
            commit_one(&mut store, &follows, topic, bytes),
        ) {
            ("accept", Outcome::Accepted(item)) => {
                assert_eq!(
                    item.scope,
                    gongkai::protocol::topic::community_of("gongkai/v1", topic).unwrap()
                );
                assert_eq!(
                    item.is_active(&audience, now),
                    case["shown"].as_bool().unwrap(),
                    "{file}: {}",
                    case["note"]
                );
            }
            ("reject", Outcome::Rejected(r)) => {
                let reason = case["reason"].as_str().unwrap();
                assert!(r.reason.contains(reason), "{file}: {}", r.reason);
            }
            (expect, other) => panic!("{file}: expected {expect}, got {other:?}"),
        }
    }
    // Both notices of one id are held, each under its own scope, and the
    // community's is still the very envelope it accepted.
    let catalog = store.load_catalog().unwrap();
    assert!(
        catalog
            .item("yanshan-street", "2026q3-finance-001")
            .is_some()
    );
    assert!(catalog.item(home, "2026q3-finance-001").is_some());
    assert_eq!(
        store.envelope(home, "2026q3-finance-001", 1).unwrap(),
        Some(own)
    );
    assert_eq!(catalog.rejected, 4);
}

/// Version 1.1's paged manifests and the reset (section 3.6), applied in
/// order to one screen, with the manifest state after every step.
#[test]
fn v1_1_manifest_pages_and_reset_leave_the_expected_state() {
    let folder = dir().join("v1.1/manifest-pages");
    let sequence = json(folder.join("sequence.json"));
    let trust = &sequence["trust"];
    let community = sequence["screen_community"].as_str().unwrap();
    let follows = Follows::home_only(
        TopicSpace::new("gongkai/v1", community),
        TrustPolicy {
            office: keys_1_1(&trust["office"]),
            supervisor: keys_1_1(&trust["supervisor"]),
            operator: keys_1_1(&trust["operator"]),
            ..TrustPolicy::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("screen.db")).unwrap();
    let ids = |n: usize| -> Vec<String> { (1..=n).map(|i| format!("n-{i:05}")).collect() };
    // (version, pages of the index and pages held, ids listed so far)
    type State = (u64, Option<(u32, Vec<u32>)>, Vec<String>);
    let v58 = |held: Vec<u32>, listed: usize| -> State { (58, Some((2, held)), ids(listed)) };
    let expected: Vec<State> = vec![
        v58(vec![], 0),
        v58(vec![1], 3),
        v58(vec![1], 3),
        v58(vec![1, 2], 5),
        v58(vec![1, 2], 5),
        v58(vec![1, 2], 5),
        v58(vec![1, 2], 5),
        v58(vec![1, 2], 5),
        (3, None, ids(1)),
        (4, None, ids(2)),
        (4, None, ids(2)),
    ];
    let steps = sequence["steps"].as_array().unwrap();
    assert_eq!(steps.len(), expected.len());
    for (step, state) in steps.iter().zip(expected) {
        let file = step["file"].as_str().unwrap();
        let topic = step["topic"].as_str().unwrap();
        let bytes = std::fs::read(folder.join(file)).unwrap();
        let outcome = commit_one(&mut store, &follows, topic, bytes);
        match (step["expect"].as_str().unwrap(), &outcome) {
            ("accept", Outcome::Manifest { .. } | Outcome::ManifestPage { .. }) => {}
            ("ignore", Outcome::StaleManifest { .. } | Outcome::OtherPage { .. }) => {}
            ("reject", Outcome::Rejected(r)) => {
                let reason = step["reason"].as_str().unwrap();
                assert!(r.reason.contains(reason), "{file}: {}", r.reason);
            }
            (expect, other) => panic!("{file}: expected {expect}, got {other:?}"),
        }
        // What the store keeps is what a restarted screen starts from.
        let held = store.manifest_state(community).unwrap().unwrap();
        let mut listed: Vec<String> = held.entries.iter().map(|(id, _)| id.clone()).collect();
        listed.sort();
        let pages = held
            .pages
            .as_ref()
            .map(|p| (p.count, p.held.iter().copied().collect::<Vec<_>>()));
        assert_eq!(
            (held.version, pages, listed),
            state,
            "{file}: {}",
            step["state_after"]
        );
    }
}
