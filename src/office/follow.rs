//! What the office follows on its broker, and with which keys: every
//! `[[scope]]` of office.toml, verified as a screen verifies it. The keys a
//! scope trusts are office.toml's plus those of the people enrolled in the
//! office's database, which the caller passes in (`TrustedKey`): this
//! module reads no database.
//!
//! The follow itself is `daemon::Follower`, the screens' own intake.
//! [`keep_following`] starts it again whenever the people enrolled change,
//! so a notice signed by someone who enrolled after the server started is
//! taken (and shown on the public page) as a screen given the new `[trust]`
//! block takes it.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::Failure;
use crate::daemon::Follower;
use crate::mqtt::{Brokers, Connect};
use crate::protocol::{Follows, PublicKey, Role, Scope, TopicSpace};
use crate::store::office::{User, UserRole};

use super::config::ServerConfig;

/// A key trusted in one scope besides office.toml's: an enrolled person's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub scope: String,
    pub role: Role,
    pub key: PublicKey,
}

/// Every scope of office.toml with its keys and policy, plus `extra` keys
/// in the scopes they name (a key for a scope not configured is ignored);
/// `None` when office.toml lists no scope. The first scope is the one
/// `Follows` calls home: it matters only for commands, which the office
/// never takes.
pub fn follows(config: &ServerConfig, extra: &[TrustedKey]) -> Option<Follows> {
    let mut scopes = config.scopes.iter().map(|s| {
        let mut policy = s.policy.clone();
        for k in extra.iter().filter(|k| k.scope == s.id) {
            let keys = match k.role {
                Role::Office => &mut policy.office,
                Role::Supervisor => &mut policy.supervisor,
                Role::Operator => &mut policy.operator,
            };
            if !keys.contains(&k.key) {
                keys.push(k.key.clone());
            }
        }
        Scope {
            space: TopicSpace::new(&config.topic_prefix, &s.id),
            policy,
        }
    });
    let home = scopes.next()?;
    Some(Follows::new(home, scopes.collect()))
}

/// The keys the console's people sign with, in every scope of office.toml
/// (as the console's own check and the `[trust]` block count them): enrolled
/// staff as office, supervisors as supervisor, and the server's operator
/// key, which signs the console's manifests.
pub fn enrolled_keys(
    config: &ServerConfig,
    users: &[User],
    operator: &PublicKey,
) -> Vec<TrustedKey> {
    let mut people: Vec<(Role, PublicKey)> = users
        .iter()
        .filter_map(|user| {
            let role = match user.role {
                UserRole::Staff => Role::Office,
                UserRole::Supervisor => Role::Supervisor,
                UserRole::Viewer => return None,
            };
            let key = PublicKey::from_base64(user.public_key.as_deref()?).ok()?;
            Some((role, key))
        })
        .collect();
    people.push((Role::Operator, operator.clone()));
    config
        .scopes
        .iter()
        .flat_map(|scope| {
            people.iter().map(|(role, key)| TrustedKey {
                scope: scope.id.clone(),
                role: *role,
                key: key.clone(),
            })
        })
        .collect()
}

/// How often [`keep_following`] looks at who is enrolled.
pub const ENROLMENT_CHECK: Duration = Duration::from_secs(2);

/// Runs `follower`, started with `keys`, until `cancel`; every
/// [`ENROLMENT_CHECK`] asks `current` for the keys the follow should trust
/// and, when they changed, starts the follow again with them (the store is
/// kept; the new session takes the retained notices again, now judged with
/// the new keys). A failed follow, or one that cannot start again, goes to
/// `failed`, and this returns.
pub async fn keep_following<F, Fut>(
    config: ServerConfig,
    mut follower: Follower,
    mut keys: Vec<TrustedKey>,
    current: F,
    cancel: CancellationToken,
    failed: mpsc::UnboundedSender<Failure>,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<TrustedKey>>>,
{
    let mut failures = follower.failures.take();
    let mut every = tokio::time::interval(ENROLMENT_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        let failure = async {
            match failures.as_mut() {
                Some(failures) => failures.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            failure = failure => {
                let _ = failed.send(failure);
                break;
            }
            _ = every.tick() => {}
        }
        let now = match current().await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!("cannot read who is enrolled: {e:#}");
                continue;
            }
        };
        if now == keys {
            continue;
        }
        tracing::info!(
            "the people enrolled changed: following again with {} keys (was {})",
            now.len(),
            keys.len()
        );
        follower.shutdown().await;
        match start(&config, &now).await {
            Ok(Some(mut again)) => {
                failures = again.failures.take();
                follower = again;
                keys = now;
            }
            Ok(None) => return,
            Err(e) => {
                let _ = failed.send(Failure {
                    task: "follow",
                    cause: format!("cannot follow again with the new keys: {e:#}"),
                });
                return;
            }
        }
    }
    follower.shutdown().await;
}

/// How the office reaches its broker, when office.toml names one.
pub fn connect(config: &ServerConfig) -> anyhow::Result<Option<Connect>> {
    let Some(broker) = &config.broker else {
        return Ok(None);
    };
    let password = broker
        .password_file
        .as_deref()
        .map(crate::mqtt::read_secret)
        .transpose()?;
    Ok(Some(Connect {
        brokers: Brokers::new(broker.urls.clone(), 0),
        // A fresh id each start: a clean session, never one a screen or
        // another office process holds.
        client_id: format!("gongkai-office-{}", uuid::Uuid::new_v4().simple()),
        username: broker.username.clone(),
        password,
        ca_file: broker.ca_file.clone(),
        clean_session: true,
        manual_acks: true,
        will: None,
    }))
}

/// Starts following office.toml's scopes on its broker, trusting `extra`
/// keys too; `None` without a broker.
pub async fn start(
    config: &ServerConfig,
    extra: &[TrustedKey],
) -> anyhow::Result<Option<Follower>> {
    let (Some(connect), Some(follows)) = (connect(config)?, follows(config, extra)) else {
        return Ok(None);
    };
    Follower::start(&config.follow_store(), follows, connect)
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keys_join_their_scope_only() {
        let office = crate::protocol::SecretKey::from_seed([1; 32]).public();
        let person = crate::protocol::SecretKey::from_seed([9; 32]).public();
        let config = ServerConfig::parse(&format!(
            "listen = \"127.0.0.1:1\"\ndatabase = \"o.db\"\n\
             [[scope]]\nid = \"a\"\noffice = [\"{}\"]\n[[scope]]\nid = \"b\"\n",
            office.to_base64()
        ))
        .unwrap();
        let extra = [
            TrustedKey {
                scope: "b".into(),
                role: Role::Supervisor,
                key: person.clone(),
            },
            TrustedKey {
                scope: "nowhere".into(),
                role: Role::Office,
                key: person.clone(),
            },
        ];
        let follows = follows(&config, &extra).unwrap();
        assert_eq!(follows.home().id(), "a");
        assert_eq!(follows.home().policy.office, vec![office]);
        assert!(follows.home().policy.supervisor.is_empty());
        assert_eq!(follows.get("b").unwrap().policy.supervisor, vec![person]);
        assert!(follows.get("nowhere").is_none());
    }
}
