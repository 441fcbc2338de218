//! Scopes (PROTOCOL.md section 3.7, new in 1.1): the publisher levels a
//! screen follows. Its home community comes first; street offices and
//! districts above it follow, each with its own topics and its own trusted
//! keys and policy. A key trusted in one scope counts for nothing in another,
//! and a message from a scope the screen does not follow is refused by name.

use super::rejection::Rejection;
use super::topic::{TopicSpace, community_of};
use super::verify::{TrustPolicy, Verified, verify_message};

/// One scope a screen follows.
#[derive(Debug, Clone)]
pub struct Scope {
    pub space: TopicSpace,
    pub policy: TrustPolicy,
}

impl Scope {
    pub fn id(&self) -> &str {
        &self.space.community
    }
}

/// Every scope a screen follows, its home community first. Scope ids are
/// unique (the configuration refuses a repeat).
#[derive(Debug, Clone)]
pub struct Follows {
    scopes: Vec<Scope>,
}

impl Follows {
    pub fn new(home: Scope, upper: Vec<Scope>) -> Self {
        let mut scopes = vec![home];
        scopes.extend(upper);
        Self { scopes }
    }

    /// The home community only, as a 1.0 screen.
    pub fn home_only(space: TopicSpace, policy: TrustPolicy) -> Self {
        Self::new(Scope { space, policy }, Vec::new())
    }

    pub fn home(&self) -> &Scope {
        &self.scopes[0]
    }

    /// Home first, then the upper scopes in configuration order.
    pub fn all(&self) -> &[Scope] {
        &self.scopes
    }

    pub fn get(&self, scope: &str) -> Option<&Scope> {
        self.scopes.iter().find(|s| s.id() == scope)
    }

    pub fn is_home(&self, scope: &str) -> bool {
        self.home().id() == scope
    }

    /// The verdict on `bytes` arriving on `topic`: under the keys and policy
    /// of the scope the topic names, or refused if the screen follows none.
    pub fn verify(&self, topic: &str, bytes: &[u8]) -> Result<Verified, Rejection> {
        let unexpected = || Rejection::UnexpectedTopic {
            topic: topic.to_owned(),
            community: self.home().id().to_owned(),
        };
        let id = community_of(&self.home().space.prefix, topic).ok_or_else(unexpected)?;
        let Some(scope) = self.get(&id) else {
            return Err(Rejection::UnfollowedScope {
                topic: topic.to_owned(),
                scope: id,
            });
        };
        verify_message(&scope.space, topic, bytes, &scope.policy)
    }
}
