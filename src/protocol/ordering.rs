//! Section 3.3 as one pure decision: what an accepted-as-valid notice version
//! does to the screen's record of that notice id.

/// What the screen already holds for a notice id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    pub version: u64,
    pub payload_sha256: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// A version higher than any held: store it and make it current.
    Newer,
    /// Exactly what is held (a redelivery): nothing to do.
    Duplicate,
    /// Lower than what is held: ignored as a replay.
    Replay,
    /// Same version, other content: rejected and reported.
    Equivocation,
}

/// Versions are compared by number; payloads by the hash of their bytes, so a
/// re-signed envelope of the same payload (one more signature) is a duplicate,
/// not an equivocation.
pub fn decide(held: Option<Held<'_>>, version: u64, payload_sha256: &str) -> Ordering {
    match held {
        None => Ordering::Newer,
        Some(h) if version > h.version => Ordering::Newer,
        Some(h) if version < h.version => Ordering::Replay,
        Some(h) if h.payload_sha256 == payload_sha256 => Ordering::Duplicate,
        Some(_) => Ordering::Equivocation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_payloads_decide() {
        let held = Some(Held {
            version: 2,
            payload_sha256: "aa",
        });
        assert_eq!(decide(None, 1, "aa"), Ordering::Newer);
        assert_eq!(decide(held, 3, "bb"), Ordering::Newer);
        assert_eq!(decide(held, 1, "bb"), Ordering::Replay);
        assert_eq!(decide(held, 2, "aa"), Ordering::Duplicate);
        assert_eq!(decide(held, 2, "bb"), Ordering::Equivocation);
    }
}
