//! What a failure report or a dead letter says of the message it is about, kept while the
//! handler owns the message.
//!
//! The report and dead-letter layers see a message before its handler takes it, but need its
//! subject, delivery info and headers only if the handler fails. `Message` holds them as owned
//! strings and maps, so a clone of the message (or of its parts) would allocate for every
//! message. An [`Origin`] copies their bytes into one buffer inside the layer's future instead
//! (on the heap, once, for a message whose texts do not fit) and makes `String`s, a
//! `DeliveryInfo` and a header map of them only for a failure.

use std::fmt;

use natty::message::DeliveryInfo;
use natty::Message;

/// A message's subject, delivery info and any further texts a layer keeps (a message id,
/// headers), stored inline up to `N` bytes.
pub(crate) struct Origin<const N: usize> {
    texts: Texts<N>,
    stream_sequence: u64,
    consumer_sequence: u64,
    delivered: u64,
    pending: u64,
    published_unix_nanos: i128,
}

/// The texts every origin starts with: subject, stream and consumer.
const OWN_TEXTS: usize = 3;

impl<const N: usize> Origin<N> {
    /// The subject and delivery info of `msg`, with room for `extra_bytes` more bytes of
    /// texts (see [`stored_len`]) before it would spill to the heap.
    pub(crate) fn of(msg: &Message, extra_bytes: usize) -> Self {
        let info = msg.info();
        let own = [msg.subject(), &*info.stream, &*info.consumer];
        let mut texts = Texts::with_capacity(
            own.iter().map(|text| stored_len(text)).sum::<usize>() + extra_bytes,
        );
        for text in own {
            texts.push(text);
        }
        Self {
            texts,
            stream_sequence: info.stream_sequence,
            consumer_sequence: info.consumer_sequence,
            delivered: info.delivered,
            pending: info.pending,
            published_unix_nanos: info.published_unix_nanos,
        }
    }

    /// Keep `text` too, after those kept before it.
    pub(crate) fn push(&mut self, text: &str) {
        self.texts.push(text);
    }

    /// The subject the message was published to.
    pub(crate) fn subject(&self) -> &str {
        self.texts.iter().next().unwrap_or_default()
    }

    /// The message's delivery info, made again.
    pub(crate) fn info(&self) -> DeliveryInfo {
        let mut texts = self.texts.iter().skip(1);
        let (stream, consumer) = (
            texts.next().unwrap_or_default(),
            texts.next().unwrap_or_default(),
        );
        let mut info = DeliveryInfo::new(stream, consumer);
        info.stream_sequence = self.stream_sequence;
        info.consumer_sequence = self.consumer_sequence;
        info.delivered = self.delivered;
        info.pending = self.pending;
        info.published_unix_nanos = self.published_unix_nanos;
        info
    }

    /// The texts pushed after the subject and delivery info, in order.
    pub(crate) fn pushed(&self) -> impl Iterator<Item = &str> {
        self.texts.iter().skip(OWN_TEXTS)
    }
}

impl<const N: usize> fmt::Debug for Origin<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("subject", &self.subject())
            .field("info", &self.info())
            .finish_non_exhaustive()
    }
}

/// The bytes `text` takes in an origin's buffer.
pub(crate) fn stored_len(text: &str) -> usize {
    LEN + text.len()
}

/// Each text is stored after its length.
const LEN: usize = std::mem::size_of::<usize>();

/// Strings stored end to end, each after its length: inline up to `N` bytes, else on the heap.
enum Texts<const N: usize> {
    Inline { bytes: [u8; N], len: usize },
    Heap(Vec<u8>),
}

impl<const N: usize> Texts<N> {
    fn with_capacity(capacity: usize) -> Self {
        if capacity <= N {
            Texts::Inline {
                bytes: [0; N],
                len: 0,
            }
        } else {
            Texts::Heap(Vec::with_capacity(capacity))
        }
    }

    fn push(&mut self, text: &str) {
        self.extend(&text.len().to_ne_bytes());
        self.extend(text.as_bytes());
    }

    fn extend(&mut self, more: &[u8]) {
        match self {
            Texts::Inline { bytes, len } => {
                let end = *len + more.len();
                if end <= N {
                    bytes[*len..end].copy_from_slice(more);
                    *len = end;
                } else {
                    // More was pushed than the capacity said: move to the heap.
                    let mut heap = Vec::with_capacity(end.max(2 * N));
                    heap.extend_from_slice(&bytes[..*len]);
                    heap.extend_from_slice(more);
                    *self = Texts::Heap(heap);
                }
            }
            Texts::Heap(heap) => heap.extend_from_slice(more),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Texts::Inline { bytes, len } => &bytes[..*len],
            Texts::Heap(heap) => heap,
        }
    }

    /// The texts, in the order they were pushed.
    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut rest = self.bytes();
        std::iter::from_fn(move || {
            let (len, after) = rest.split_first_chunk::<LEN>()?;
            let (text, after) = after.split_at_checked(usize::from_ne_bytes(*len))?;
            rest = after;
            // Each text was pushed whole from a `&str`, so it is valid UTF-8.
            std::str::from_utf8(text).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        let mut info = DeliveryInfo::new("ORDERS", "billing");
        info.stream_sequence = 17;
        info.consumer_sequence = 9;
        info.delivered = 3;
        info.pending = 4;
        info.published_unix_nanos = 1_700_000_000_000_000_000;
        Message::builder("orders.créé", "{}").info(info).build().0
    }

    #[test]
    fn an_origin_gives_back_the_subject_info_and_texts_it_kept() {
        let msg = message();
        let mut origin = Origin::<128>::of(&msg, stored_len("order-17") + stored_len(""));
        origin.push("order-17");
        origin.push("");
        assert!(matches!(origin.texts, Texts::Inline { .. }));
        assert_eq!(origin.subject(), "orders.créé");
        assert_eq!(&origin.info(), msg.info());
        assert_eq!(origin.pushed().collect::<Vec<_>>(), ["order-17", ""]);
    }

    #[test]
    fn texts_that_do_not_fit_inline_are_kept_whole_on_the_heap() {
        let msg = message();
        let long = "x".repeat(100);
        // Too small for the subject and info alone.
        let mut origin = Origin::<16>::of(&msg, 0);
        assert!(matches!(origin.texts, Texts::Heap(_)));
        origin.push(&long);
        assert_eq!(origin.subject(), "orders.créé");
        assert_eq!(&origin.info(), msg.info());
        // Pushed past the room it was given: it moves to the heap.
        let mut origin = Origin::<64>::of(&msg, 0);
        assert!(matches!(origin.texts, Texts::Inline { .. }));
        origin.push(&long);
        origin.push("after");
        assert!(matches!(origin.texts, Texts::Heap(_)));
        assert_eq!(origin.subject(), "orders.créé");
        assert_eq!(
            origin.pushed().collect::<Vec<_>>(),
            [long.as_str(), "after"]
        );
    }
}
