//! [`KvWrite`]: one key's part of a multi-key write, [`Bucket::write_all`](super::Bucket::write_all).

use bytes::Bytes;

/// One key's change in [`Bucket::write_all`](super::Bucket::write_all): a value to put or a
/// delete, optionally only if the key is still at a revision.
///
/// # Example
/// ```
/// use natty::KvWrite;
///
/// let moves = [
///     KvWrite::put("stock.tea", "9").if_revision(41), // only if nobody changed it since 41
///     KvWrite::put("order.7", "reserved").if_missing(),
///     KvWrite::delete("cart.7"),
/// ];
/// assert_eq!(moves[0].key(), "stock.tea");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvWrite {
    pub(super) key: String,
    /// `None` deletes.
    pub(super) value: Option<Bytes>,
    /// The revision the key must be at: 0 for "has never been written".
    pub(super) revision: Option<u64>,
}

impl KvWrite {
    /// Write `value` under `key`.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
            revision: None,
        }
    }

    /// Delete `key` (its history stays until the bucket's limits remove it).
    pub fn delete(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: None,
            revision: None,
        }
    }

    /// Only if the key's last write is still `revision` (compare-and-set).
    #[must_use]
    pub fn if_revision(mut self, revision: u64) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Only if the key has never been written. A key that was deleted has a revision (its
    /// delete's): write it with [`KvWrite::if_revision`] instead.
    #[must_use]
    pub fn if_missing(self) -> Self {
        self.if_revision(0)
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}
