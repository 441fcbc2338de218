//! Which SUBSCRIBE each SUBACK answers, and which standing filters a broker
//! refused and must be asked for again. Pure state; the session task sends
//! what it returns.
//!
//! A broker may refuse a filter with return code 0x80 and keep the rest of
//! the SUBSCRIBE: NATS does so when it cannot create the JetStream consumer
//! behind a QoS 1 subscription in time (a cluster electing a leader, or
//! loaded by a fleet connecting at once). A screen that ignored the code
//! would never receive that scope's notices on that session.
//!
//! rumqttc numbers a SUBSCRIBE only when its event loop takes it from the
//! request channel, and reports the number as `Outgoing::Subscribe(pkid)`,
//! one event per request, in the order the requests were made (requests
//! left in the channel at a disconnect are sent, in order, after the
//! reconnect). So the filters of each request wait in a queue until their
//! packet id is known, and then until their SUBACK.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{QoS, SubscribeFilter};
use tokio::time::Instant;

use crate::backoff::Retry;

/// The first wait before a refused filter is asked for again; it doubles at
/// each refusal up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// One SUBSCRIBE: its filters, and whether they are standing subscriptions
/// (manifests, notices, commands), which are retried when refused, or
/// catch-up fetches, which the manifest repairs on its own.
#[derive(Debug, Clone)]
struct Request {
    filters: Vec<(String, QoS)>,
    standing: bool,
}

#[derive(Debug)]
pub struct Subacks {
    /// Requests made, their packet ids not known yet.
    unnumbered: VecDeque<Request>,
    /// Requests sent, by packet id, their SUBACK not in yet.
    unanswered: HashMap<u16, Request>,
    /// Refused standing filters, asked for again at `due`.
    refused: Vec<(String, QoS)>,
    due: Option<Instant>,
    retry: Retry,
}

impl Default for Subacks {
    fn default() -> Self {
        Self {
            unnumbered: VecDeque::new(),
            unanswered: HashMap::new(),
            refused: Vec::new(),
            due: None,
            retry: Retry::new(FIRST_RETRY, MAX_RETRY),
        }
    }
}

/// What a SUBACK said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The filters refused, in their request's order.
    pub refused: Vec<String>,
    /// Whether the answer was for a standing subscription.
    pub standing: bool,
}

impl Subacks {
    /// A SUBSCRIBE was handed to the client, in this order.
    pub fn requested(&mut self, filters: &[SubscribeFilter], standing: bool) {
        self.unnumbered.push_back(Request {
            filters: filters.iter().map(|f| (f.path.clone(), f.qos)).collect(),
            standing,
        });
    }

    /// The event loop numbered the oldest SUBSCRIBE not numbered yet.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(request) = self.unnumbered.pop_front() {
            self.unanswered.insert(pkid, request);
        }
    }

    /// The SUBACK for `pkid`: `granted[i]` says whether the i-th filter was
    /// granted. Refused standing filters are kept to be asked for again.
    pub fn acked(&mut self, pkid: u16, granted: &[bool], now: Instant) -> Answer {
        let Some(request) = self.unanswered.remove(&pkid) else {
            return Answer::default();
        };
        let refused: Vec<(String, QoS)> = request
            .filters
            .into_iter()
            .zip(granted.iter().copied().chain(std::iter::repeat(false)))
            .filter(|(_, granted)| !granted)
            .map(|(filter, _)| filter)
            .collect();
        if refused.is_empty() {
            if request.standing && self.refused.is_empty() && self.due.is_none() {
                self.retry.reset();
            }
        } else if request.standing {
            for filter in &refused {
                if !self.refused.contains(filter) {
                    self.refused.push(filter.clone());
                }
            }
            if self.due.is_none() {
                self.due = Some(now + self.retry.next_delay());
            }
        }
        Answer {
            refused: refused.into_iter().map(|(path, _)| path).collect(),
            standing: request.standing,
        }
    }

    /// Standing SUBSCRIBEs whose SUBACK has not come.
    pub fn awaiting_standing(&self) -> usize {
        self.unnumbered
            .iter()
            .chain(self.unanswered.values())
            .filter(|r| r.standing)
            .count()
    }

    /// A new connection. Answers to SUBSCRIBEs sent on the old one will not
    /// come: if the broker kept the session, their standing filters are
    /// asked for again now (subscribing twice is harmless); if not, the
    /// caller subscribes everything anew, refused filters included.
    pub fn reconnected(&mut self, session_present: bool, now: Instant) {
        let lost: Vec<Request> = self.unanswered.drain().map(|(_, r)| r).collect();
        if session_present {
            for request in lost.into_iter().filter(|r| r.standing) {
                for filter in request.filters {
                    if !self.refused.contains(&filter) {
                        self.refused.push(filter);
                    }
                }
            }
            if !self.refused.is_empty() {
                self.due = Some(now);
            }
        } else {
            self.refused.clear();
            self.due = None;
            self.retry.reset();
        }
    }

    /// When the refused filters are next asked for, if any are.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The refused standing filters to subscribe again, once due; the
    /// caller hands them to the client and then to [`Subacks::requested`].
    pub fn retry(&mut self, now: Instant) -> Vec<SubscribeFilter> {
        match self.due {
            Some(due) if now >= due => {
                self.due = None;
                std::mem::take(&mut self.refused)
                    .into_iter()
                    .map(|(path, qos)| SubscribeFilter::new(path, qos))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(paths: &[&str]) -> Vec<SubscribeFilter> {
        paths
            .iter()
            .map(|p| SubscribeFilter::new((*p).to_owned(), QoS::AtLeastOnce))
            .collect()
    }

    fn paths(filters: &[SubscribeFilter]) -> Vec<&str> {
        filters.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn packet_ids_are_matched_to_requests_in_order() {
        let mut s = Subacks::default();
        let now = Instant::now();
        s.requested(&filters(&["m/a", "m/b"]), true);
        s.requested(&filters(&["n/#", "c/1"]), true);
        assert_eq!(s.awaiting_standing(), 2);
        s.sent(7);
        s.sent(8);
        // Answered out of order: each SUBACK names its request.
        assert_eq!(
            s.acked(8, &[true, false], now),
            Answer {
                refused: vec!["c/1".into()],
                standing: true
            }
        );
        assert_eq!(
            s.acked(7, &[true, true], now),
            Answer {
                refused: vec![],
                standing: true
            }
        );
        assert_eq!(s.awaiting_standing(), 0);
        // An answer to nothing asked is ignored.
        assert_eq!(s.acked(9, &[false], now), Answer::default());
    }

    #[test]
    fn refused_standing_filters_are_asked_again_with_growing_waits() {
        let mut s = Subacks::default();
        let t0 = Instant::now();
        s.requested(&filters(&["n/#", "c/1"]), true);
        s.sent(1);
        s.acked(1, &[false, true], t0);
        let due = s.due().expect("a retry is due");
        assert!(due <= t0 + FIRST_RETRY);
        if due > t0 {
            assert!(s.retry(t0).is_empty(), "not before it is due");
        }
        let again = s.retry(due);
        assert_eq!(paths(&again), ["n/#"]);
        assert_eq!(s.due(), None);
        // Refused again: the next wait may be twice as long.
        s.requested(&again, true);
        s.sent(2);
        s.acked(2, &[false], due);
        assert!(s.due().unwrap() <= due + 2 * FIRST_RETRY);
        let again = s.retry(s.due().unwrap());
        s.requested(&again, true);
        s.sent(3);
        s.acked(3, &[true], due);
        assert_eq!(s.due(), None);
        assert!(s.retry(due + MAX_RETRY).is_empty());
    }

    #[test]
    fn a_refused_fetch_is_not_retried_here() {
        let mut s = Subacks::default();
        let now = Instant::now();
        s.requested(&filters(&["n/x"]), false);
        assert_eq!(s.awaiting_standing(), 0);
        s.sent(1);
        let answer = s.acked(1, &[false], now);
        assert_eq!(answer.refused, ["n/x"]);
        assert!(!answer.standing);
        assert_eq!(s.due(), None);
    }

    #[test]
    fn a_kept_session_asks_again_for_what_was_unanswered_a_new_one_forgets_it() {
        let mut s = Subacks::default();
        let now = Instant::now();
        s.requested(&filters(&["m/a"]), true);
        s.requested(&filters(&["n/x"]), false);
        s.sent(1);
        s.sent(2);
        s.reconnected(true, now);
        assert_eq!(s.awaiting_standing(), 0);
        assert_eq!(paths(&s.retry(now)), ["m/a"]);

        let mut s = Subacks::default();
        s.requested(&filters(&["n/#"]), true);
        s.sent(1);
        s.acked(1, &[false], now);
        s.reconnected(false, now);
        assert_eq!(s.due(), None);
        assert!(s.retry(now + MAX_RETRY).is_empty());
    }

    #[test]
    fn a_request_not_numbered_before_a_reconnect_keeps_its_place() {
        // rumqttc sends requests left in its channel after the reconnect:
        // their packet ids come then, in order.
        let mut s = Subacks::default();
        let now = Instant::now();
        s.requested(&filters(&["m/a"]), true);
        s.reconnected(false, now);
        s.requested(&filters(&["m/b"]), true);
        s.sent(1);
        s.sent(2);
        assert_eq!(s.acked(2, &[false], now).refused, ["m/b"]);
        assert_eq!(s.acked(1, &[false], now).refused, ["m/a"]);
    }
}
