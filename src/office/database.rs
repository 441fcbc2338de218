//! The one owner of the office's SQLite connection while `gongkai office
//! serve` runs: a thread that holds the `OfficeStore` and takes `Job`s from
//! a channel, answering each on a oneshot after its commit.
//!
//! One owner because SQLite serialises writers anyway, and a thread of its
//! own because rusqlite blocks: handlers on the async runtime never wait on
//! a lock or an fsync, only on their answer. Feedback is group-committed:
//! every request already waiting goes into one transaction.
//!
//! This module decides nothing about HTTP (statuses, tokens, bodies): that
//! is `office::intake`. It validates feedback items only to leave the
//! invalid ones out of the commit, with `office::input`'s rules.

use std::sync::mpsc as std_mpsc;

use axum::body::Bytes;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::protocol::feedback::{FeedbackBatch, FeedbackResponse, ItemRejection};
use crate::protocol::plays::PlayRecord;
use crate::store::office::{FeedbackBatchRef, OfficeStore, PlaysOutcome, TokenHolder};

use super::input::feedback_problem;

/// Where a job's answer goes.
pub type Answer<T> = oneshot::Sender<anyhow::Result<T>>;

/// Work for the thread that owns the database.
pub enum Job {
    /// The screen (and its community, once bound) a token hash belongs to.
    HolderOf(String, Answer<Option<TokenHolder>>),
    /// Binds an unbound screen to a community; answers the one it has.
    Bind(String, String, Answer<Option<String>>),
    Feedback(FeedbackBatch, Answer<FeedbackResponse>),
    /// Play chain records of the screen named second, judged against its
    /// chain and stored if they continue it.
    Plays(PlaysBody, String, Answer<PlaysOutcome>),
    /// A screenshot: screen, command id, PNG.
    Screenshot(String, String, Bytes, Answer<()>),
    /// Wipes the contact numbers of items answered before this time.
    WipeContacts(OffsetDateTime, Answer<usize>),
    /// Work of the web console (`office::console`), which answers itself:
    /// the console's calls are many and small, each a closure over the store.
    Console(Box<dyn FnOnce(&mut OfficeStore) + Send>),
}

/// `POST /api/v1/plays`: the 1.0 body, with 1.1's chain records.
#[derive(Debug, Deserialize)]
pub struct PlaysBody {
    pub screen: String,
    pub community: String,
    pub plays: Vec<PlayRecord>,
}

/// Why a job has no result.
#[derive(Debug)]
pub enum Failure {
    /// The database thread is gone (the server is stopping).
    Closed,
    /// The job ran and failed.
    Failed(anyhow::Error),
}

/// A handle on the database thread; clones share it. The thread ends once
/// every handle is dropped.
#[derive(Clone)]
pub struct Database {
    jobs: std_mpsc::Sender<Job>,
}

/// Jobs taken at most into one round of the database thread.
const GROUP_MAX: usize = 64;

impl Database {
    /// Starts the thread that owns `store`.
    pub fn start(store: OfficeStore) -> std::io::Result<(Database, std::thread::JoinHandle<()>)> {
        let (jobs, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("office-db".into())
            .spawn(move || database_thread(store, rx))?;
        Ok((Database { jobs }, thread))
    }

    /// Runs `f` on the database thread and waits for what it returns.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut OfficeStore) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Failure> {
        self.run(|tx: Answer<T>| {
            Job::Console(Box::new(move |store| {
                let _ = tx.send(f(store));
            }))
        })
        .await
    }

    /// Runs a job on the database thread and waits for its answer.
    pub async fn run<T>(&self, job: impl FnOnce(Answer<T>) -> Job) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).map_err(|_| Failure::Closed)?;
        rx.await
            .map_err(|_| Failure::Closed)?
            .map_err(Failure::Failed)
    }
}

fn database_thread(mut store: OfficeStore, jobs: std_mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        // Group commit: feedback of every request already waiting is stored
        // in one transaction. Each commit costs an fsync (synchronous=FULL),
        // which is what bounds screens sending one item per request. Other
        // jobs neither read nor write feedback, so they may run first.
        let mut feedback = Vec::new();
        let mut next = Some(job);
        while let Some(job) = next {
            match job {
                Job::Feedback(batch, reply) => feedback.push((batch, reply)),
                other => run_job(&mut store, other),
            }
            next = if feedback.len() < GROUP_MAX {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        if !feedback.is_empty() {
            store_feedback(&mut store, feedback);
        }
    }
}

fn run_job(store: &mut OfficeStore, job: Job) {
    match job {
        Job::HolderOf(hash, reply) => {
            let _ = reply.send(store.holder_of(&hash).map_err(Into::into));
        }
        Job::Bind(screen, community, reply) => {
            let _ = reply.send(
                store
                    .bind_community(&screen, &community)
                    .map_err(Into::into),
            );
        }
        Job::Feedback(batch, reply) => store_feedback(store, vec![(batch, reply)]),
        Job::Plays(body, screen, reply) => {
            let _ = reply.send(
                store
                    .add_chain_plays(
                        &screen,
                        &body.community,
                        &body.plays,
                        OffsetDateTime::now_utc(),
                    )
                    .map_err(Into::into),
            );
        }
        Job::Screenshot(screen, id, png, reply) => {
            let _ = reply.send(store.put_screenshot(&screen, &id, &png).map_err(Into::into));
        }
        Job::Console(work) => work(store),
        Job::WipeContacts(answered_before, reply) => {
            let _ = reply.send(
                store
                    .wipe_answered_contacts(answered_before)
                    .map_err(Into::into),
            );
        }
    }
}

/// Stores the valid items of every request in one commit and answers each
/// request after it; invalid items are rejected with their reasons.
fn store_feedback(store: &mut OfficeStore, jobs: Vec<(FeedbackBatch, Answer<FeedbackResponse>)>) {
    let (batches, replies): (Vec<FeedbackBatch>, Vec<_>) = jobs.into_iter().unzip();
    let mut responses = Vec::with_capacity(batches.len());
    let mut valid = Vec::with_capacity(batches.len());
    for batch in &batches {
        let mut response = FeedbackResponse::default();
        let mut ok = Vec::new();
        for item in &batch.items {
            match feedback_problem(item) {
                Some(reason) => response.rejected.push(ItemRejection {
                    id: item.id.clone(),
                    reason,
                }),
                None => ok.push(item),
            }
        }
        responses.push(response);
        valid.push(ok);
    }
    let refs: Vec<FeedbackBatchRef<'_>> = batches
        .iter()
        .zip(&valid)
        .map(|(batch, items)| FeedbackBatchRef {
            screen: &batch.screen,
            community: &batch.community,
            items,
        })
        .collect();
    match store.add_feedback_batches(&refs, OffsetDateTime::now_utc()) {
        Ok(new) => {
            let answers = batches.iter().zip(&valid).zip(responses).zip(new);
            for ((((batch, items), mut response), new), reply) in answers.zip(replies) {
                tracing::info!(
                    "{}: {} feedback items accepted ({new} new), {} rejected",
                    batch.screen,
                    items.len(),
                    response.rejected.len()
                );
                // One id per item, even when a request carried it twice
                // (in two spellings, say): it was stored once.
                let mut seen = std::collections::HashSet::new();
                response.accepted = items
                    .iter()
                    .filter(|i| seen.insert(i.id.as_str()))
                    .map(|i| i.id.clone())
                    .collect();
                let _ = reply.send(Ok(response));
            }
        }
        Err(e) => {
            let e = anyhow::Error::new(e);
            for reply in replies {
                let _ = reply.send(Err(anyhow::anyhow!("{e:#}")));
            }
        }
    }
}
