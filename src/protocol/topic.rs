//! Topic names (PROTOCOL.md sections 3.1, 3.6, 5 and 6) under a configurable
//! prefix, built and parsed in one place.

/// The topic space of one community under one prefix (default `gongkai/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpace {
    pub prefix: String,
    pub community: String,
}

/// What a topic of this community names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    Notice(String),
    Manifest,
    /// **[1.1]** Page `k` (1-based) of a paged manifest.
    ManifestPage(u32),
    ScreenCommand(String),
    Command,
    Status(String),
}

pub const DEFAULT_PREFIX: &str = "gongkai/v1";

impl TopicSpace {
    pub fn new(prefix: &str, community: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
            community: community.to_owned(),
        }
    }

    fn base(&self) -> String {
        format!("{}/{}", self.prefix, self.community)
    }

    pub fn notice(&self, id: &str) -> String {
        format!("{}/notices/{id}", self.base())
    }

    pub fn notices_filter(&self) -> String {
        format!("{}/notices/+", self.base())
    }

    pub fn manifest(&self) -> String {
        format!("{}/manifest", self.base())
    }

    pub fn manifest_page(&self, page: u32) -> String {
        format!("{}/manifest/pages/{page}", self.base())
    }

    pub fn status(&self, screen: &str) -> String {
        format!("{}/screens/{screen}/status", self.base())
    }

    pub fn status_filter(&self) -> String {
        format!("{}/screens/+/status", self.base())
    }

    pub fn screen_command(&self, screen: &str) -> String {
        format!("{}/screens/{screen}/cmd", self.base())
    }

    pub fn command(&self) -> String {
        format!("{}/cmd", self.base())
    }

    /// Parses a topic of this community; `None` for anything else, including
    /// ids that break the id pattern.
    pub fn parse(&self, topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix(&self.base())?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["notices", id] if super::is_valid_id(id) => Some(Topic::Notice((*id).to_owned())),
            ["manifest"] => Some(Topic::Manifest),
            ["manifest", "pages", k] => {
                // The canonical spelling only: "01" and "+1" name no page.
                let page: u32 = k.parse().ok()?;
                (page >= 1 && page.to_string() == *k).then_some(Topic::ManifestPage(page))
            }
            ["cmd"] => Some(Topic::Command),
            ["screens", id, "cmd"] if super::is_valid_id(id) => {
                Some(Topic::ScreenCommand((*id).to_owned()))
            }
            ["screens", id, "status"] if super::is_valid_id(id) => {
                Some(Topic::Status((*id).to_owned()))
            }
            _ => None,
        }
    }
}

/// Splits `{prefix}/{community}/notices/{id}` or `{prefix}/{community}/manifest`
/// when the community is not known in advance (the office CLI's verify).
pub fn community_of(prefix: &str, topic: &str) -> Option<String> {
    let rest = topic
        .strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix('/')?;
    let community = rest.split('/').next()?;
    super::is_valid_id(community).then(|| community.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let space = TopicSpace::new("gongkai/v1/", "lixia-demo");
        assert_eq!(space.notice("a-1"), "gongkai/v1/lixia-demo/notices/a-1");
        assert_eq!(
            space.parse(&space.notice("a-1")),
            Some(Topic::Notice("a-1".into()))
        );
        assert_eq!(space.parse(&space.manifest()), Some(Topic::Manifest));
        assert_eq!(
            space.parse(&space.status("lobby-3")),
            Some(Topic::Status("lobby-3".into()))
        );
        assert_eq!(
            space.parse(&space.manifest_page(12)),
            Some(Topic::ManifestPage(12))
        );
        assert_eq!(space.parse("gongkai/v1/lixia-demo/manifest/pages/0"), None);
        assert_eq!(space.parse("gongkai/v1/lixia-demo/manifest/pages/01"), None);
        assert_eq!(space.parse("gongkai/v1/other/manifest"), None);
        assert_eq!(space.parse("gongkai/v1/lixia-demo/notices/-bad"), None);
        assert_eq!(space.parse("gongkai/v1/lixia-demo/notices/a/b"), None);
    }
}
