//! Request-reply services on the NATS service API (ADR-32, "micro"): what a natty service
//! answers with and what a caller reads back.
//!
//! # Example
//! ```
//! use natty::service::ServiceError;
//!
//! let overloaded = ServiceError::new(503, "overloaded");
//! assert_eq!(overloaded.description(), "overloaded");
//! ```

mod error;

pub use error::{ServiceError, SERVICE_ERROR, SERVICE_ERROR_CODE};
