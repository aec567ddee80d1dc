//! Checks on names, subjects, keys and headers, made before anything is sent.
//!
//! natty runs these itself on every call; they are public so that code building names from
//! user input (web handlers, CLIs) can check them up front with the same rules. The rules
//! follow NATS conventions (ADR-6 for names, the KV key rules of the official clients); the
//! server would refuse, or worse silently misroute, what these refuse.
//!
//! # Example
//! ```
//! use natty::validate;
//!
//! assert!(validate::publish_subject("orders.created").is_ok());
//! assert!(validate::publish_subject("orders.*").is_err());
//! assert!(validate::subject_token("o-17").is_ok());
//! assert!(validate::subject_token("1.paid").is_err());
//! assert!(validate::key_token("o-17").is_ok());
//! assert!(validate::key_token("o#17").is_err()); // a subject token, but not a KV key
//! assert!(validate::header("Nats-Msg-Id", "order-17").is_ok());
//! assert!(validate::header("order id", "17").is_err());
//! let err = validate::key("..").unwrap_err();
//! assert_eq!(err.reason(), "starts or ends with a dot");
//! ```

use crate::error::ValidationError;

/// A subject that may be published to: non-empty tokens without whitespace or control
/// characters, no wildcards, at most [`MAX_SUBJECT_LEN`] bytes.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn publish_subject(subject: &str) -> Result<(), ValidationError> {
    subject_tokens(subject, false)
}

/// A subject filter: like a publish subject, but `*` tokens and a final `>` are allowed.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn filter_subject(subject: &str) -> Result<(), ValidationError> {
    subject_tokens(subject, true)
}

/// Longest subject accepted: the server drops a connection whose protocol line passes its
/// `max_control_line` (4 KiB by default), so a long subject would cost a reconnect, not an error.
pub const MAX_SUBJECT_LEN: usize = 3 * 1024;

/// Longest KV key accepted: it travels inside `$KV.<bucket>.<key>`.
pub const MAX_KEY_LEN: usize = 2 * 1024;

fn subject_tokens(subject: &str, wildcards: bool) -> Result<(), ValidationError> {
    let invalid = |reason| Err(ValidationError::new("subject", subject, reason));
    if subject.is_empty() {
        return invalid("is empty");
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return invalid("is longer than 3072 bytes");
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return invalid("has an empty token");
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("contains whitespace or a control character");
        }
        match token {
            "*" | ">" if !wildcards => return invalid("contains a wildcard"),
            ">" if tokens.peek().is_some() => return invalid("has `>` before the last token"),
            "*" | ">" => {}
            _ if token.contains(['*', '>']) => return invalid("has a wildcard inside a token"),
            _ => {}
        }
    }
    Ok(())
}

/// One subject token, for values that come from outside (paths, bodies) and are pasted into
/// a subject: not empty, no dot, wildcard, whitespace or control character, at most 256
/// bytes. A token check keeps `orders.{id}` from becoming another subject or a wildcard.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn subject_token(token: &str) -> Result<(), ValidationError> {
    let invalid = |reason| Err(ValidationError::new("subject token", token, reason));
    if token.is_empty() {
        return invalid("is empty");
    }
    if token.len() > 256 {
        return invalid("is longer than 256 bytes");
    }
    if token.contains('.') {
        return invalid("contains a dot");
    }
    if token.contains(['*', '>']) {
        return invalid("contains a wildcard");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("contains whitespace or a control character");
    }
    Ok(())
}

/// One token usable both as a subject token and as a KV key, for ids that name a message's
/// subject (`orders.{id}.created`) and the key its state is kept under: `[-/_=A-Za-z0-9]+`,
/// at most 256 bytes. The intersection of [`subject_token`] and [`key`]: a value that passes
/// one but not the other (`é`, `#`, `+`, `:`, `$JS`, `a.b`) would be accepted on one side
/// and refused, or misread, on the other.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn key_token(token: &str) -> Result<(), ValidationError> {
    let invalid = |reason| Err(ValidationError::new("id", token, reason));
    if token.is_empty() {
        return invalid("is empty");
    }
    if token.len() > 256 {
        return invalid("is longer than 256 bytes");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'='))
    {
        return invalid("may only contain A-Z, a-z, 0-9 and - / _ =");
    }
    Ok(())
}

/// A stream or consumer name (`what` names which, for the error): no whitespace or control
/// characters, none of `.`, `*`, `>`, `/`, `\`, at most 255 bytes.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn name(what: &'static str, name: &str) -> Result<(), ValidationError> {
    let invalid = |reason| Err(ValidationError::new(what, name, reason));
    if name.is_empty() {
        return invalid("is empty");
    }
    if name.len() > 255 {
        return invalid("is longer than 255 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return invalid("contains whitespace, a control character or one of . * > / \\");
    }
    Ok(())
}

/// A KV bucket name: `[A-Za-z0-9_-]+`.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn bucket(bucket: &str) -> Result<(), ValidationError> {
    if bucket.is_empty() {
        return Err(ValidationError::new("bucket name", bucket, "is empty"));
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ValidationError::new(
            "bucket name",
            bucket,
            "may only contain A-Z, a-z, 0-9, _ and -",
        ));
    }
    Ok(())
}

/// A KV key: `[-/_=.A-Za-z0-9]+`, no leading or trailing dot, no empty token, at most
/// [`MAX_KEY_LEN`] bytes.
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn key(key: &str) -> Result<(), ValidationError> {
    let invalid = |reason| Err(ValidationError::new("key", key, reason));
    if key.is_empty() {
        return invalid("is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return invalid("is longer than 2048 bytes");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
    {
        return invalid("may only contain A-Z, a-z, 0-9 and - / _ = .");
    }
    if key.starts_with('.') || key.ends_with('.') {
        return invalid("starts or ends with a dot");
    }
    if key.contains("..") {
        return invalid("has an empty token (..)");
    }
    Ok(())
}

/// A header that can be sent: a name of one or more visible ASCII characters other than `:`
/// (no space, control or non-ASCII character), a value without CR or LF. Either would end the
/// header line early and corrupt the message. A bad value is reported by its header's name,
/// never by its content (it may be a credential).
///
/// # Errors
/// A [`ValidationError`] naming the rule broken.
pub fn header(name: &str, value: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new("header name", name, "is empty"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(ValidationError::new(
            "header name",
            name,
            "may only contain visible ASCII characters other than `:`",
        ));
    }
    if value.contains(['\r', '\n']) {
        return Err(ValidationError::new(
            "value of header",
            name,
            "contains a CR or LF",
        ));
    }
    Ok(())
}

/// A payload of `len` bytes no larger than `max_payload` (the server's limit; 0 means
/// unknown, and anything passes).
///
/// # Errors
/// A [`ValidationError`] saying the payload is too large.
pub fn payload(len: usize, max_payload: usize) -> Result<(), ValidationError> {
    if max_payload > 0 && len > max_payload {
        return Err(ValidationError::new(
            "payload",
            &format!("{len} bytes"),
            "is larger than the server's max_payload",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects() {
        for ok in ["a", "orders.created", "a-b_c.1", "$JS.API.INFO"] {
            assert!(publish_subject(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\r\nb", "a\tb", "*", ">", "a.*", "a.>", "a*b",
        ] {
            assert!(publish_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filter_subjects() {
        for ok in ["a.*", "a.>", ">", "*.b.*"] {
            assert!(filter_subject(ok).is_ok(), "{ok}");
        }
        for bad in ["a.>.b", "a*", "", "a..b"] {
            assert!(filter_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_buckets_keys() {
        assert!(name("stream name", "ORDERS_1-x").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b"] {
            assert!(name("stream name", bad).is_err(), "{bad:?}");
        }
        assert!(bucket("leader_election-1").is_ok());
        for bad in ["", "a.b", "a b", "a/b"] {
            assert!(bucket(bad).is_err(), "{bad:?}");
        }
        for ok in ["a", "a.b", "a/b=c_d-e", "orders.123"] {
            assert!(key(ok).is_ok(), "{ok}");
        }
        let long = "k".repeat(10_000);
        assert!(publish_subject(&long).is_err(), "a 10 kB subject");
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>", long.as_str()] {
            assert!(key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_tokens_are_both_subject_tokens_and_keys() {
        for ok in ["o-1", "A_b=c/d", "0"] {
            assert!(key_token(ok).is_ok(), "{ok}");
            assert!(subject_token(ok).is_ok() && key(ok).is_ok(), "{ok}");
        }
        let long = "k".repeat(257);
        for bad in [
            "",
            "a.b",
            "é",
            "🦀",
            "#",
            "+",
            ":",
            "%",
            "$JS",
            "a\\b",
            "a\"b",
            "a b",
            "*",
            ">",
            long.as_str(),
        ] {
            assert!(key_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        for (name, value) in [("Nats-Msg-Id", "1"), ("x-a_b.c", ""), ("k", "a b\tc")] {
            assert!(header(name, value).is_ok(), "{name:?}: {value:?}");
        }
        for (name, value) in [
            ("", "v"),
            ("a:b", "v"),
            ("a b", "v"),
            ("a\0b", "v"),
            ("é", "v"),
            ("k", "a\rb"),
            ("k", "a\nb"),
        ] {
            assert!(header(name, value).is_err(), "{name:?}: {value:?}");
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let err = key(&"x".repeat(10_000).replace('x', " ")).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
