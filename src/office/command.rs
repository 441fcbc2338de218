//! `gongkai command`: one signed command (PROTOCOL.md section 5) to one
//! screen, and the wait for its outcome in the screen's status
//! (`last_command`). The screen does the checking; this only builds, signs
//! and publishes, and reads the status back as `status::StatusMessage`.

use std::time::Duration;

use anyhow::{Context, bail};
use time::OffsetDateTime;

use super::broker::OneShotClient;
use crate::mqtt::Connect;
use crate::protocol::command::{Action, Payload};
use crate::protocol::envelope::{COMMAND_TYPE, Envelope};
use crate::protocol::{SecretKey, TopicSpace};
use crate::status::{LastCommand, StatusMessage};

/// How long a command stays valid: long enough for a screen that is
/// reconnecting, short enough that a stale one never runs.
pub const VALID_FOR: time::Duration = time::Duration::minutes(5);

/// The signed envelope of `action` for `screen`, and its id.
pub fn signed_command(
    community: &str,
    screen: &str,
    action: Action,
    key: &SecretKey,
    now: OffsetDateTime,
) -> anyhow::Result<(String, Vec<u8>)> {
    let id = uuid::Uuid::now_v7().to_string();
    let payload = Payload {
        schema: 1,
        id: id.clone(),
        community: community.to_owned(),
        screens: vec![screen.to_owned()],
        issued_at: now,
        expires_at: now + VALID_FOR,
        action: action.as_str().to_owned(),
    };
    let bytes = serde_json::to_vec(&payload)?;
    Ok((id, Envelope::sign_new(COMMAND_TYPE, &bytes, key).to_bytes()))
}

/// Publishes the command (QoS 1, not retained) on the screen's own topic and
/// waits, at most `wait`, until its status reports the outcome.
pub async fn send_command(
    connect: &Connect,
    topics: &TopicSpace,
    screen: &str,
    action: Action,
    key: &SecretKey,
    wait: Duration,
) -> anyhow::Result<LastCommand> {
    let (id, envelope) = signed_command(
        &topics.community,
        screen,
        action,
        key,
        OffsetDateTime::now_utc(),
    )?;
    let mut client = OneShotClient::connect(connect).await?;
    client
        .publish(&topics.screen_command(screen), envelope)
        .await
        .context("publishing the command")?;
    let deadline = tokio::time::Instant::now() + wait;
    let status_topic = topics.status(screen);
    loop {
        let retained = client.retained(&status_topic).await?;
        if let Some(StatusMessage::Online(status)) = retained
            .last()
            .and_then(|p| StatusMessage::parse(&p.payload).ok())
        {
            if let Some(last) = status.last_command.filter(|c| c.id == id) {
                client.close().await;
                return Ok(last);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            client.close().await;
            bail!(
                "screen {screen} did not report command {id} within {} s (is it online? does it \
                 trust this key as office or operator?)",
                wait.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
