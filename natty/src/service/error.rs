//! [`ServiceError`]: the error a service endpoint answers with, as the NATS service API carries
//! it (the `Nats-Service-Error` and `Nats-Service-Error-Code` headers).

use std::fmt;

/// The header carrying a service error's description.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
/// The header carrying a service error's code.
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// An error answer of a service endpoint: a code (HTTP-like by convention: 400 for a bad
/// request, 500 for a failure, 503 for an overloaded instance) and a description.
///
/// # Example
/// ```
/// use natty::service::ServiceError;
///
/// let err = ServiceError::new(404, "no such order");
/// assert_eq!(err.code(), 404);
/// assert_eq!(err.to_string(), "404 no such order");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    code: u16,
    description: String,
}

impl ServiceError {
    /// An error with `code` and `description`.
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// The error's code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The error's description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.description)
    }
}

impl std::error::Error for ServiceError {}
