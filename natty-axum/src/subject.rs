//! Subject checks for web input: single tokens from paths and bodies, and the scope a
//! [`AckedPublisher`](crate::AckedPublisher) enforces.
//!
//! A value pasted into a subject can change its meaning: `orders.{id}` with the id `1.paid`
//! or `>` is another subject, or a wildcard. [`token`] accepts exactly one subject token, so
//! build subjects from request input with it. The publisher checks the whole subject again:
//! no wildcard, no reserved prefix (`$JS`, `$KV`, `$SYS`, any `$...`, `_INBOX`), and inside
//! the filters the application allowed.
//!
//! The syntax rules are natty's own ([`natty::validate`]); this module adds the web-facing
//! ones (reserved prefixes, the application's scope) and the HTTP rejections.
//!
//! # Example
//! ```
//! use natty_axum::subject;
//!
//! let id = "o-17";
//! let subject = format!("orders.{}.created", subject::token(id)?);
//! assert_eq!(subject, "orders.o-17.created");
//! assert!(subject::token("1.paid").is_err());
//! assert!(subject::token(">").is_err());
//! // An id that names a subject and a KV key must fit both:
//! assert_eq!(subject::key_token("o-17").ok(), Some("o-17"));
//! assert!(subject::key_token("o#17").is_err());
//! # Ok::<(), natty_axum::rejection::InvalidSubject>(())
//! ```

use std::collections::HashSet;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::rejection::{InvalidId, InvalidSubject, PublishRejection, SubjectOutOfScope};

/// `value` if it is one valid subject token (no dot, wildcard, whitespace or control
/// character, not empty, at most 256 bytes); a 400 rejection otherwise.
///
/// # Errors
/// [`InvalidSubject`], naming the value and the reason.
pub fn token(value: &str) -> Result<&str, InvalidSubject> {
    natty::validate::subject_token(value)
        .map(|()| value)
        .map_err(|err| {
            InvalidSubject::with_detail(format_args!("token {:?} {}", shorten(value), err.reason()))
        })
}

/// `value` if it is one token usable both in a subject and as a KV key
/// ([`natty::validate::key_token`]: `[-/_=A-Za-z0-9]+`, at most 256 bytes); a 400 rejection
/// otherwise. Check ids with it when they become both, as an order id becomes
/// `orders.{id}.created` and the key of the order's status: an id that passes [`token`] but is
/// not a key (`é`, `#`, `:`) would be published and then never readable.
///
/// # Errors
/// [`InvalidId`], naming the value and the reason.
pub fn key_token(value: &str) -> Result<&str, InvalidId> {
    natty::validate::key_token(value)
        .map(|()| value)
        .map_err(|err| {
            InvalidId::with_detail(format_args!("id {:?} {}", shorten(value), err.reason()))
        })
}

/// Whether `subject`'s first token is reserved for NATS itself.
fn is_reserved(subject: &str) -> bool {
    let first = subject.split('.').next().unwrap_or_default();
    first.starts_with('$') || first == "_INBOX"
}

/// Why `subject` is not a valid subject (wildcards allowed only with `wildcards`).
fn syntax(subject: &str, wildcards: bool) -> Option<&'static str> {
    let checked = if wildcards {
        natty::validate::filter_subject(subject)
    } else {
        natty::validate::publish_subject(subject)
    };
    checked.err().map(|err| err.reason())
}

/// A filter the application may allow: valid, wildcards as whole tokens, not reserved.
pub(crate) fn check_filter(filter: &str) -> Result<(), &'static str> {
    if let Some(reason) = syntax(filter, true) {
        return Err(reason);
    }
    if is_reserved(filter) {
        return Err("names a reserved subject");
    }
    Ok(())
}

/// Whether `subject` (no wildcards) matches `filter` (NATS wildcard rules).
fn matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for part in filter.split('.') {
        match (part, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (part, Some(token)) if part == token => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// A subject a handler may publish to: valid, not reserved, inside one of `filters`.
pub(crate) fn check_publish(subject: &str, filters: &[String]) -> Result<(), PublishRejection> {
    if let Some(reason) = syntax(subject, false) {
        return Err(InvalidSubject::with_detail(format_args!(
            "subject {:?} {reason}",
            shorten(subject)
        ))
        .into());
    }
    if is_reserved(subject) {
        return Err(SubjectOutOfScope::with_detail(format_args!(
            "subject {:?} is reserved",
            shorten(subject)
        ))
        .into());
    }
    if !filters.iter().any(|filter| matches(filter, subject)) {
        return Err(SubjectOutOfScope::with_detail(format_args!(
            "subject {:?} is not in the allowed subjects",
            shorten(subject)
        ))
        .into());
    }
    Ok(())
}

/// Subjects remembered as passed before [`CheckedSubjects`] starts over.
const REMEMBERED: usize = 1024;

/// The subjects that passed [`check_publish`] against a state's filters, so a subject a route
/// publishes to on every request is checked once, not on every request. The check depends
/// on nothing but the subject and the filters, which never change, so a remembered pass is
/// what the check would answer again; refusals are not remembered, each is checked (and
/// answered) as before. Bounded: subjects built from request input cannot grow it without
/// end, at [`REMEMBERED`] it forgets them all and starts over.
#[derive(Debug, Default)]
pub(crate) struct CheckedSubjects {
    passed: RwLock<HashSet<Box<str>>>,
}

impl CheckedSubjects {
    /// [`check_publish`], answered from memory for a subject that passed it before.
    pub(crate) fn check(&self, subject: &str, filters: &[String]) -> Result<(), PublishRejection> {
        if self.read().contains(subject) {
            return Ok(());
        }
        check_publish(subject, filters)?;
        let mut passed = self.write();
        if passed.len() >= REMEMBERED {
            passed.clear();
        }
        passed.insert(subject.into());
        Ok(())
    }

    // A panic cannot tear the set (inserts and clears only), so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, HashSet<Box<str>>> {
        self.passed.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashSet<Box<str>>> {
        self.passed.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Long input is cut so that error bodies stay readable.
pub(crate) fn shorten(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        for ok in ["o-1", "abc_DEF", "é"] {
            assert_eq!(token(ok).ok(), Some(ok));
        }
        let long = "x".repeat(257);
        for bad in ["", "a.b", "*", ">", "a>", "a b", "a\nb", long.as_str()] {
            assert!(token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_tokens() {
        assert_eq!(key_token("o-1").ok(), Some("o-1"));
        for bad in ["é", "#", "+", ":", "%", "$JS", "a\\b", "a\"b", "a.b", ""] {
            assert!(key_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_like_nats() {
        assert!(matches("orders.>", "orders.created"));
        assert!(matches("orders.>", "orders.1.paid"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches("orders.*", "orders.created"));
        assert!(!matches("orders.*", "orders.1.paid"));
        assert!(matches("orders.created", "orders.created"));
        assert!(!matches("orders.created", "orders.created.x"));
        assert!(!matches("orders.*.paid", "orders.1.sent"));
        assert!(matches(">", "anything.at.all"));
    }

    #[test]
    fn publish_scope() {
        let allowed = vec!["orders.>".to_owned(), ">".to_owned()];
        assert!(check_publish("orders.created", &allowed).is_ok());
        for reserved in ["$JS.API.INFO", "$KV.b.k", "$SYS.REQ", "_INBOX.x", "$O.x"] {
            let err = check_publish(reserved, &allowed).unwrap_err();
            assert!(
                matches!(err, PublishRejection::SubjectOutOfScope(_)),
                "{reserved}"
            );
        }
        for invalid in ["orders.*", "orders.>", "orders..x", "orders. x", ""] {
            let err = check_publish(invalid, &allowed).unwrap_err();
            assert!(
                matches!(err, PublishRejection::InvalidSubject(_)),
                "{invalid}"
            );
        }
        let only_orders = vec!["orders.>".to_owned()];
        let err = check_publish("billing.created", &only_orders).unwrap_err();
        assert!(matches!(err, PublishRejection::SubjectOutOfScope(_)));
        assert!(
            check_publish("orders.created", &[]).is_err(),
            "no filter, no publish"
        );
    }

    #[test]
    fn remembered_subjects_are_answered_as_checked() {
        let allowed = vec!["orders.>".to_owned()];
        let checked = CheckedSubjects::default();
        for _ in 0..2 {
            assert!(checked.check("orders.created", &allowed).is_ok());
            let err = checked.check("billing.created", &allowed).unwrap_err();
            assert!(matches!(err, PublishRejection::SubjectOutOfScope(_)));
            let err = checked.check("orders.*", &allowed).unwrap_err();
            assert!(matches!(err, PublishRejection::InvalidSubject(_)));
        }
        assert_eq!(checked.read().len(), 1, "only a pass is remembered");
        for n in 0..REMEMBERED + 1 {
            assert!(checked.check(&format!("orders.{n}"), &allowed).is_ok());
        }
        assert!(checked.read().len() <= REMEMBERED, "bounded");
        assert!(checked.check("orders.created", &allowed).is_ok());
    }

    #[test]
    fn filters_are_checked() {
        assert!(check_filter("orders.>").is_ok());
        assert!(check_filter("orders.*.paid").is_ok());
        for bad in ["", "orders.>.x", "a..b", "$JS.>", "_INBOX.>", "a*"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
    }
}
