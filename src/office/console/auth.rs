//! Who is at the console: passwords (argon2id), random tokens kept only as
//! hashes (enrolment links, session cookies, CSRF tokens), the cookies
//! themselves, and the login rate limit.
//!
//! Pure apart from the operating system's random numbers: the limiter takes
//! `now`, and nothing here reads the database or a request.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::protocol::sha256_hex;

/// The session cookie; the pre-login CSRF cookie (double submit).
pub const SESSION_COOKIE: &str = "gk_session";
pub const FORM_COOKIE: &str = "gk_form";

/// How long a session lasts, and an enrolment link.
pub const SESSION_SECONDS: i64 = 8 * 3600;
pub const ENROLMENT_SECONDS: i64 = 72 * 3600;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// 32 random bytes, URL-safe base64: enrolment links, cookies, CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a token.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// An argon2id PHC string (the crate's defaults: 19 MiB, 2 passes). Slow on
/// purpose: call it off the async runtime.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

/// Whether `password` matches a stored PHC string. Slow on purpose.
pub fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Equality that takes as long whatever the first difference: for CSRF
/// tokens, which an attacker might otherwise guess byte by byte.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A `Set-Cookie` value: never readable by scripts, sent only over a secure
/// context and only with requests from the console's own pages.
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Failed logins counted within this window.
pub const LIMIT_WINDOW_SECONDS: i64 = 15 * 60;
/// Failures allowed per account, and per client address, within the window.
pub const LIMIT_PER_ACCOUNT: usize = 5;
pub const LIMIT_PER_ADDRESS: usize = 20;
/// Keys the limiter remembers at most: past it, the oldest are forgotten, so
/// that a flood of names cannot grow the server's memory without bound.
const LIMIT_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    Account(String),
    Address(IpAddr),
}

/// Failed logins per account and per client address, in a sliding window.
/// While either is over its limit, logins are refused before the password
/// is even checked: a right password does not get through either.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: HashMap<LimitKey, VecDeque<i64>>,
}

impl LoginLimiter {
    /// `Err(seconds)` to wait while the account or the address is over
    /// its limit.
    pub fn check(&mut self, account: &str, address: Option<IpAddr>, now: i64) -> Result<(), i64> {
        let mut wait = 0;
        for (key, limit) in Self::keys(account, address) {
            if let Some(times) = self.failures.get_mut(&key) {
                while times
                    .front()
                    .is_some_and(|t| *t <= now - LIMIT_WINDOW_SECONDS)
                {
                    times.pop_front();
                }
                if times.len() >= limit {
                    let oldest = times[times.len() - limit];
                    wait = wait.max(oldest + LIMIT_WINDOW_SECONDS - now);
                }
            }
        }
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    pub fn failed(&mut self, account: &str, address: Option<IpAddr>, now: i64) {
        if self.failures.len() >= LIMIT_KEYS {
            self.forget_oldest(now);
        }
        for (key, _) in Self::keys(account, address) {
            self.failures.entry(key).or_default().push_back(now);
        }
    }

    /// A right password clears the account's failures (not the address's:
    /// one account of the attacker's own must not reset its guessing).
    pub fn succeeded(&mut self, account: &str) {
        self.failures.remove(&LimitKey::Account(account.to_owned()));
    }

    fn keys(account: &str, address: Option<IpAddr>) -> Vec<(LimitKey, usize)> {
        let mut keys = vec![(LimitKey::Account(account.to_owned()), LIMIT_PER_ACCOUNT)];
        keys.extend(address.map(|a| (LimitKey::Address(a), LIMIT_PER_ADDRESS)));
        keys
    }

    fn forget_oldest(&mut self, now: i64) {
        self.failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| *t > now - LIMIT_WINDOW_SECONDS)
        });
        while self.failures.len() >= LIMIT_KEYS {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => self.failures.remove(&key),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_only() {
        let hash = hash_password("正确的密码 horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches("正确的密码 horse battery", &hash));
        assert!(!password_matches("正确的密码 horse batter", &hash));
        assert!(!password_matches("x", "not a hash"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let header = "a=1; gk_session=abc; gk_form=def";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(header, FORM_COOKIE), Some("def"));
        assert_eq!(cookie(header, "gk"), None);
        let set = set_cookie(SESSION_COOKIE, "abc", 60);
        for part in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(set.contains(part), "{set}");
        }
    }

    #[test]
    fn the_limiter_holds_per_account_and_per_address_and_lets_go_after_the_window() {
        let mut limiter = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for t in 0..LIMIT_PER_ACCOUNT as i64 {
            assert!(limiter.check("li", Some(ip), t).is_ok());
            limiter.failed("li", Some(ip), t);
        }
        let wait = limiter.check("li", Some(ip), 10).unwrap_err();
        assert_eq!(wait, LIMIT_WINDOW_SECONDS - 10);
        // Another account from the same address is not yet held...
        assert!(limiter.check("wang", Some(ip), 10).is_ok());
        // ...until the address has failed often enough.
        for n in 0..(LIMIT_PER_ADDRESS - LIMIT_PER_ACCOUNT) {
            limiter.failed(&format!("name-{n}"), Some(ip), 11);
        }
        assert!(limiter.check("wang", Some(ip), 12).is_err());
        assert!(
            limiter.check("wang", None, 12).is_ok(),
            "the account alone is clean"
        );
        // The window slides.
        assert!(limiter.check("li", None, LIMIT_WINDOW_SECONDS + 5).is_ok());
        // A success clears the account but not the address.
        limiter.succeeded("li");
        assert!(limiter.check("li", None, 12).is_ok());
        assert!(limiter.check("li", Some(ip), 12).is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
