//! natty
#![allow(missing_docs)]
pub mod error;
pub mod message;
pub use message::Message;
