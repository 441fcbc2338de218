//! What the office follows on its broker, and with which keys: every
//! `[[scope]]` of office.toml, verified as a screen verifies it. The keys a
//! scope trusts are office.toml's plus those of the people enrolled in the
//! office's database, which the caller passes in (`TrustedKey`): this
//! module reads no database.
//!
//! The follow itself is `daemon::Follower`, the screens' own intake.

use crate::daemon::Follower;
use crate::mqtt::{Brokers, Connect};
use crate::protocol::{Follows, PublicKey, Role, Scope, TopicSpace};

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
