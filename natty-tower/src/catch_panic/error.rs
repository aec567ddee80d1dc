use std::any::Any;
use std::fmt;

use natty::error::ConsumeErrorKind;

use crate::error::Error;

/// The text a handler panicked with: the `source` of a
/// [`Panicked`](ConsumeErrorKind::Panicked) error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicMessage(String);

impl PanicMessage {
    pub(crate) fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let text = if let Some(text) = payload.downcast_ref::<&'static str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a non-string panic payload".to_owned()
        };
        Self(text)
    }

    /// The panic's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PanicMessage {}

impl From<PanicMessage> for Error<ConsumeErrorKind> {
    fn from(message: PanicMessage) -> Self {
        Error::with_source(ConsumeErrorKind::Panicked, message)
    }
}
