//! [`HeaderMap`]: the headers of a message, natty's own type.
//!
//! NATS headers are `Name: value` lines, as in HTTP. natty's map is shaped like
//! `http::HeaderMap` with `&str` names and values. It wraps async-nats' map, so publishing and
//! consuming move it without copying, while an async-nats release cannot change its API; the
//! `From` conversions to and from `async_nats::HeaderMap` are the escape hatch.
//!
//! # Names
//!
//! A name is sent as spelled (NATS preserves case), but this map matches names ASCII
//! case-insensitively, as HTTP does: `get("traceparent")` finds the `Traceparent` a Go service
//! wrote. [`insert`](HeaderMap::insert) replaces a name's values whatever their spelling, and
//! a name keeps the spelling it was first given. Where a received message carries one name in
//! several spellings, [`get`](HeaderMap::get) prefers the exact one.
//!
//! The server reads its own headers (`Nats-Msg-Id`, `Nats-Expected-Stream`, ...) in their exact
//! spelling only, so the map stores those in the server's spelling whatever case they are
//! given in: `insert("nats-msg-id", key)` sends `Nats-Msg-Id: key`.
//!
//! # Invalid headers
//!
//! A name is one or more visible ASCII characters other than `:`, and a value has no CR or LF;
//! anything else would corrupt the message on the wire. [`insert`](HeaderMap::insert) and
//! [`append`](HeaderMap::append) never panic on such input: they leave the header out and keep
//! the reason ([`HeaderMap::invalid`]), and publishing the map then fails with
//! [`PublishErrorKind::InvalidHeader`](crate::error::PublishErrorKind::InvalidHeader) before
//! anything is sent. [`try_insert`](HeaderMap::try_insert) and
//! [`try_append`](HeaderMap::try_append) refuse such a pair with a [`ValidationError`] instead,
//! and [`validate::header`] checks a pair up front.
//!
//! # Example
//! ```
//! use natty::header::{HeaderMap, NATS_MESSAGE_ID};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(NATS_MESSAGE_ID, "order-17");
//! headers.insert("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! headers.append("tag", "new");
//! headers.append("tag", "paid");
//!
//! assert_eq!(headers.get("traceparent"), headers.get("Traceparent"));
//! assert_eq!(headers.get_all("TAG").collect::<Vec<_>>(), ["new", "paid"]);
//! assert_eq!(headers.len(), 4);
//!
//! headers.insert("order id", "17"); // a space: not a header name
//! assert!(!headers.contains_key("order id"));
//! assert_eq!(headers.invalid().unwrap().reason(), "may only contain visible ASCII characters other than `:`");
//! ```

use std::fmt;

use async_nats::header::{HeaderName, HeaderValue};

use crate::error::ValidationError;
use crate::validate;

/// The header carrying a message's de-duplication id: the stream stores a message once per id
/// within its duplicate window.
pub const NATS_MESSAGE_ID: &str = "Nats-Msg-Id";

/// The W3C trace-context header naming the trace and span a message was published in.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C trace-context header carrying vendors' trace state along with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// The JetStream headers the server acts on, in the one spelling it reads. A name given in
/// another case is stored in this spelling, so `insert("nats-msg-id", ..)` still de-duplicates.
const SERVER_HEADERS: [&str; 8] = [
    NATS_MESSAGE_ID,
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Msg-Id",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
    "Nats-Expected-Last-Subject-Sequence-Subject",
    "Nats-Rollup",
    "Nats-TTL",
];

/// Whether `value` is a W3C `traceparent`: `version-traceid-parentid-flags` in lowercase hex
/// (2, 32, 16 and 2 digits), with non-zero ids and a version other than `ff`. Version `00` is
/// exactly those 55 characters; a later version may append fields after a `-`.
///
/// natty makes this one check wherever it reads a `traceparent`: a publish keeps a valid one,
/// and `natty::otel`'s extraction (natty-tower's message spans, natty-axum's requests) hides
/// any other from the propagator, so it starts a fresh trace instead of becoming a parent.
///
/// # Example
/// ```
/// use natty::header::is_traceparent;
///
/// assert!(is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// assert!(!is_traceparent("00-abc-def-01"), "short ids");
/// assert!(!is_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"));
/// ```
pub fn is_traceparent(value: &str) -> bool {
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    let mut parts = value.splitn(5, '-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest = parts.next();
    hex(version, 2)
        && version != "ff"
        && (version != "00" || rest.is_none())
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2)
}

/// A message's headers: names matched case-insensitively, each with one or more values. See
/// the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    inner: async_nats::HeaderMap,
    /// Why the first header that could not be sent was left out.
    invalid: Option<Box<ValidationError>>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `name` to `value`, replacing the values it had in any spelling. An invalid name or
    /// value is left out and kept as [`HeaderMap::invalid`].
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let Some(value) = self.admit(name, value.into()) else {
            return;
        };
        let name = self.server_spelling(name);
        let existing = self.entry(name).map(|(key, _)| key.clone());
        if self.spellings(name) > 1 {
            // Only a received map holds one name in several spellings: keep one.
            if let Some(keep) = &existing {
                let keep = as_str(keep).to_owned();
                self.retain(|key| key == keep || !key.eq_ignore_ascii_case(&keep));
            }
        }
        if let Some(key) = existing.or_else(|| self.new_name(name)) {
            self.inner.insert(key, value);
        }
    }

    /// Add `value` to the values of `name` (in the spelling it has), after those it has. An
    /// invalid name or value is left out and kept as [`HeaderMap::invalid`].
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        let Some(value) = self.admit(name, value.into()) else {
            return;
        };
        let name = self.server_spelling(name);
        let existing = self.entry(name).map(|(key, _)| key.clone());
        if let Some(key) = existing.or_else(|| self.new_name(name)) {
            self.inner.append(key, value);
        }
    }

    /// [`HeaderMap::insert`], refusing an invalid name or value instead of leaving it out: the
    /// map is unchanged then, and not marked invalid.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the rule broken (see [`validate::header`]).
    pub fn try_insert(
        &mut self,
        name: &str,
        value: impl Into<String>,
    ) -> Result<(), ValidationError> {
        self.insert(name, checked(name, value.into())?);
        Ok(())
    }

    /// [`HeaderMap::append`], refusing an invalid name or value instead of leaving it out: the
    /// map is unchanged then, and not marked invalid.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the rule broken (see [`validate::header`]).
    pub fn try_append(
        &mut self,
        name: &str,
        value: impl Into<String>,
    ) -> Result<(), ValidationError> {
        self.append(name, checked(name, value.into())?);
        Ok(())
    }

    /// The first value of `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entry(name)
            .and_then(|(_, values)| values.first())
            .map(HeaderValue::as_str)
    }

    /// Every value of `name`, matched case-insensitively: the values of one spelling in the
    /// order they were added (a received map may hold a name in several spellings, in no
    /// particular order between them).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.inner
            .iter()
            .filter(move |(key, _)| as_str(key).eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values.iter().map(HeaderValue::as_str))
    }

    /// Remove `name` in every spelling; returns its first value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let first = self.get(name)?.to_owned();
        self.retain(|key| !key.eq_ignore_ascii_case(name));
        Some(first)
    }

    /// Whether the map has `name`, matched case-insensitively.
    pub fn contains_key(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// Every `(name, value)` pair, names as spelled; names in no particular order, the values
    /// of one name in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.inner.iter().flat_map(|(key, values)| {
            values
                .iter()
                .map(move |value| (as_str(key), value.as_str()))
        })
    }

    /// How many values the map holds (a name with two values counts twice), as
    /// [`HeaderMap::iter`] yields them.
    pub fn len(&self) -> usize {
        self.inner.iter().map(|(_, values)| values.len()).sum()
    }

    /// Whether the map holds no header.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Why the first header that could not be sent was left out of this map (a name that is
    /// empty or has a space, control character, `:` or non-ASCII character; a value with CR or
    /// LF). A message carrying a map with one is not published
    /// ([`PublishErrorKind::InvalidHeader`](crate::error::PublishErrorKind::InvalidHeader)).
    pub fn invalid(&self) -> Option<&ValidationError> {
        self.invalid.as_deref()
    }

    /// Wrap a map that came over the wire or that natty built from a checked one: it was sent
    /// once, so it can be sent again, and a consumed message is not checked header by header.
    pub(crate) fn received(inner: async_nats::HeaderMap) -> Self {
        Self {
            inner,
            invalid: None,
        }
    }

    /// The async-nats map, to read a header in its exact spelling without allocating.
    pub(crate) fn as_async_nats(&self) -> &async_nats::HeaderMap {
        &self.inner
    }

    /// Check `name` and `value`; an invalid pair is kept as the map's first invalid header.
    fn admit(&mut self, name: &str, value: String) -> Option<HeaderValue> {
        match validate::header(name, &value) {
            // Checked above: async-nats' conversion panics on a CR or LF only.
            Ok(()) => Some(HeaderValue::from(value)),
            Err(err) => {
                self.refuse(err);
                None
            }
        }
    }

    /// `name` as async-nats' own type (a checked name: async-nats refuses no more than
    /// `validate::header` does, but its refusal is kept rather than unwrapped).
    fn new_name(&mut self, name: &str) -> Option<HeaderName> {
        match name.parse() {
            Ok(name) => Some(name),
            Err(_) => {
                self.refuse(ValidationError::new(
                    "header name",
                    name,
                    "is refused by async-nats",
                ));
                None
            }
        }
    }

    /// `name` in the server's spelling if it is one of the headers the server acts on (values
    /// already held under another spelling move to it); otherwise `name` as given.
    fn server_spelling<'a>(&mut self, name: &'a str) -> &'a str {
        let Some(server) = SERVER_HEADERS
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(name))
        else {
            return name;
        };
        let misspelled = |key: &str| key != server && key.eq_ignore_ascii_case(server);
        if self.inner.iter().any(|(key, _)| misspelled(as_str(key))) {
            let old = std::mem::take(&mut self.inner);
            for (key, values) in old.iter() {
                for value in values {
                    if misspelled(as_str(key)) {
                        self.inner.append(server, value.clone());
                    } else {
                        self.inner.append(key.clone(), value.clone());
                    }
                }
            }
        }
        server
    }

    fn refuse(&mut self, err: ValidationError) {
        self.invalid.get_or_insert_with(|| Box::new(err));
    }

    /// The entry of `name`: in its exact spelling if there is one, else in another.
    fn entry(&self, name: &str) -> Option<(&HeaderName, &Vec<HeaderValue>)> {
        let mut other_spelling = None;
        for (key, values) in self.inner.iter() {
            let key_str = as_str(key);
            if key_str == name {
                return Some((key, values));
            }
            if other_spelling.is_none() && key_str.eq_ignore_ascii_case(name) {
                other_spelling = Some((key, values));
            }
        }
        other_spelling
    }

    /// In how many spellings the map holds `name`.
    fn spellings(&self, name: &str) -> usize {
        self.inner
            .iter()
            .filter(|(key, _)| as_str(key).eq_ignore_ascii_case(name))
            .count()
    }

    /// Keep the names `keep` accepts. async-nats' map has no `remove`, so this rebuilds it;
    /// only removals and a received name in several spellings pay for it.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let old = std::mem::take(&mut self.inner);
        for (key, values) in old.iter() {
            if keep(as_str(key)) {
                for value in values {
                    self.inner.append(key.clone(), value.clone());
                }
            }
        }
    }
}

/// `value`, if `name` and `value` make a header that can be sent.
fn checked(name: &str, value: String) -> Result<String, ValidationError> {
    validate::header(name, &value).map(|()| value)
}

fn as_str(name: &HeaderName) -> &str {
    name.as_ref()
}

impl fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Entries<'a>(&'a HeaderMap);
        impl fmt::Debug for Entries<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        let mut out = f.debug_struct("HeaderMap");
        out.field("entries", &Entries(self));
        if let Some(invalid) = &self.invalid {
            out.field("invalid", invalid);
        }
        out.finish()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for HeaderMap {
    /// A map of the pairs, each appended (a name given twice keeps both values).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut headers = Self::new();
        headers.extend(pairs);
        headers
    }
}

impl<K: AsRef<str>, V: Into<String>> Extend<(K, V)> for HeaderMap {
    /// Append each pair.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, pairs: I) {
        for (name, value) in pairs {
            self.append(name.as_ref(), value);
        }
    }
}

impl From<async_nats::HeaderMap> for HeaderMap {
    /// Escape hatch: wrap async-nats' map, without copying. A header in it that could not be
    /// sent (an empty name, a value with CR or LF) is kept as [`HeaderMap::invalid`]. Takes
    /// async-nats' own type, so it may change with async-nats releases.
    fn from(inner: async_nats::HeaderMap) -> Self {
        let invalid = inner
            .iter()
            .flat_map(|(key, values)| values.iter().map(move |value| (key, value)))
            .find_map(|(key, value)| validate::header(as_str(key), value.as_str()).err())
            .map(Box::new);
        Self { inner, invalid }
    }
}

impl From<HeaderMap> for async_nats::HeaderMap {
    /// Escape hatch: the async-nats map inside, without copying (a header the map left out
    /// as invalid is not in it). Gives async-nats' own type, so it may change with async-nats
    /// releases.
    fn from(headers: HeaderMap) -> Self {
        headers.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_headers_take_the_servers_spelling_whatever_case_they_are_given_in() {
        let mut headers = HeaderMap::new();
        headers.insert("nats-msg-id", "key-1");
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [(NATS_MESSAGE_ID, "key-1")]
        );

        // A received map spelling it otherwise moves to the server's spelling on a write.
        let mut wire = async_nats::HeaderMap::new();
        wire.insert("NATS-TTL", "5s");
        let mut received = HeaderMap::received(wire);
        received.append("nats-ttl", "6s");
        assert_eq!(
            received.iter().collect::<Vec<_>>(),
            [("Nats-TTL", "5s"), ("Nats-TTL", "6s")]
        );
        headers.insert("X-Custom", "a");
        headers.insert("x-custom", "b");
        assert_eq!(headers.get("X-CUSTOM"), Some("b"));
        assert!(
            headers.iter().any(|(name, _)| name == "X-Custom"),
            "other names keep their first spelling"
        );
    }

    #[test]
    fn try_insert_refuses_a_bad_pair_and_leaves_the_map_as_it_was() {
        let mut headers = HeaderMap::new();
        headers.try_insert("order", "17").unwrap();
        let err = headers.try_insert("order id", "18").unwrap_err();
        assert_eq!(
            err.reason(),
            "may only contain visible ASCII characters other than `:`"
        );
        assert!(headers.try_append("note", "a\r\nb").is_err());
        assert_eq!(
            headers.invalid(),
            None,
            "a refused pair does not mark the map"
        );
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("order", "17")]);
    }

    #[test]
    fn traceparent_validation_follows_w3c_trace_context() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_traceparent(parent));
        assert!(is_traceparent(&format!("01{}-extra", &parent[2..])));
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let bad_version = "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let extra_on_v0 = format!("{parent}-extra");
        let later = format!("01{}", &parent[2..]);
        assert!(is_traceparent(&later), "a later version of the 00 layout");
        assert!(is_traceparent(&format!("{later}-")));
        let short_ids = "00-abc-def-01";
        let signed = format!("00-+{}", &parent[4..]);
        let one_digit_version = &parent[1..];
        let trailing_dash = format!("{parent}-");
        let long_trace_id = format!("00-0{}", &parent[3..]);
        let underscores = parent.replace('-', "_");
        let later_glued = format!("{later}x");
        let spaced = format!(" {parent}");
        for bad in [
            zero_trace,
            zero_parent,
            upper,
            bad_version,
            &extra_on_v0,
            "",
            "00-1-2-3",
            short_ids,
            &signed,
            one_digit_version,
            &trailing_dash,
            &long_trace_id,
            &underscores,
            &later_glued,
            &spaced,
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn names_match_case_insensitively_and_keep_their_first_spelling() {
        let mut headers = HeaderMap::new();
        headers.insert("Traceparent", "a");
        assert_eq!(headers.get("traceparent"), Some("a"));
        assert!(headers.contains_key("TRACEPARENT"));
        headers.insert("traceparent", "b");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("Traceparent", "b")]);
        headers.append("TRACEPARENT", "c");
        assert_eq!(
            headers.get_all("traceparent").collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(headers.remove("traceParent"), Some("b".to_owned()));
        assert!(headers.is_empty());
        assert_eq!(headers.remove("traceparent"), None);
    }

    #[test]
    fn a_received_name_in_two_spellings_prefers_the_exact_one_and_insert_keeps_one() {
        let mut received = async_nats::HeaderMap::new();
        received.insert("Traceparent", "go");
        received.insert("traceparent", "rust");
        let mut headers = HeaderMap::from(received);
        assert_eq!(headers.get("traceparent"), Some("rust"));
        assert_eq!(headers.get("Traceparent"), Some("go"));
        assert_eq!(headers.get_all("TRACEPARENT").count(), 2);
        headers.insert("Traceparent", "new");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("Traceparent", "new")]);
    }

    #[test]
    fn invalid_names_and_values_are_left_out_without_panicking() {
        let long = "x".repeat(100);
        for (name, value) in [
            ("", "v"),
            ("a:b", "v"),
            ("a b", "v"),
            ("a\tb", "v"),
            ("a\r\nb", "v"),
            ("\u{7f}", "v"),
            ("é", "v"),
            ("ok", "a\r\nInjected: 1"),
            ("ok", "a\nb"),
            ("ok", "a\rb"),
            (long.as_str(), "\n"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, value);
            headers.append(name, value);
            assert!(headers.is_empty(), "{name:?}: {value:?}");
            assert!(headers.invalid().is_some(), "{name:?}: {value:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("ok", "v");
        headers.insert("a:b", "v");
        headers.insert("", "v");
        assert_eq!(headers.len(), 1, "the valid header stays");
        let invalid = headers.invalid().unwrap();
        assert_eq!(invalid.what(), "header name");
        assert!(
            invalid.to_string().contains("a:b"),
            "the first refusal is kept: {invalid}"
        );
    }

    #[test]
    fn an_invalid_value_is_reported_by_its_name_not_its_content() {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", "secret\r\n");
        let invalid = headers.invalid().unwrap().to_string();
        assert!(invalid.contains("Authorization"), "{invalid}");
        assert!(!invalid.contains("secret"), "{invalid}");
    }

    #[test]
    fn an_async_nats_map_converts_both_ways_and_its_bad_headers_are_found() {
        let mut nats = async_nats::HeaderMap::new();
        nats.insert("Nats-Msg-Id", "1");
        let headers = HeaderMap::from(nats.clone());
        assert_eq!(headers.get(NATS_MESSAGE_ID), Some("1"));
        assert!(headers.invalid().is_none());
        assert_eq!(async_nats::HeaderMap::from(headers), nats);

        // async-nats takes an empty name, which would go out as ": v".
        let mut empty_name = async_nats::HeaderMap::new();
        empty_name.insert("", "v");
        assert!(HeaderMap::from(empty_name).invalid().is_some());
    }

    #[test]
    fn built_from_pairs_values_accumulate() {
        let headers: HeaderMap = [("tag", "a"), ("Tag", "b"), ("kind", "order")]
            .into_iter()
            .collect();
        assert_eq!(headers.get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(headers.len(), 3);
        let mut more = headers.clone();
        more.extend([("kind", String::from("refund"))]);
        assert_eq!(
            more.get_all("kind").collect::<Vec<_>>(),
            ["order", "refund"]
        );
        assert_ne!(more, headers);
        assert_eq!(headers.clone(), headers);
        assert!(format!("{headers:?}").contains("\"kind\": \"order\""));
    }
}
