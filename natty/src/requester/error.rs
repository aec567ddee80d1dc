//! [`RequestError`], and how async-nats' request errors and a service's error headers become
//! its kinds.

use async_nats::{RequestError as NatsRequestError, RequestErrorKind as NatsRequestErrorKind};

use crate::error::{Error, RequestErrorKind};
use crate::header::HeaderMap;
use crate::service::{ServiceError, SERVICE_ERROR, SERVICE_ERROR_CODE};

/// The error of a request. Its kind says what happened; a `Service` error carries the
/// service's code and description, read with [`service_error`](Error::service_error).
pub type RequestError = Error<RequestErrorKind>;

impl Error<RequestErrorKind> {
    /// The service's error answer (its code and description), for a `Service` error.
    ///
    /// # Example
    /// ```no_run
    /// use natty::error::RequestErrorKind;
    /// use natty::requester::Request;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let natty = natty::Natty::connect(natty::Config::from_env()).await?;
    /// match natty.requester().request(Request::new("orders.lookup", "o-17")).await {
    ///     Ok(response) => println!("{:?}", response.payload()),
    ///     Err(err) if err.kind() == RequestErrorKind::Service => {
    ///         let answer = err.service_error().expect("a service error carries its answer");
    ///         println!("refused with {}: {}", answer.code(), answer.description());
    ///     }
    ///     Err(err) => return Err(err.into()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn service_error(&self) -> Option<&ServiceError> {
        std::error::Error::source(self)?.downcast_ref::<ServiceError>()
    }
}

/// The code a service error answer counts as when its code header is missing or not a number.
const UNKNOWN_CODE: u16 = 500;

/// The service error an answer's headers carry, if they carry one: `Nats-Service-Error-Code`
/// or `Nats-Service-Error` (names matched case-insensitively).
pub(super) fn service_error(headers: &HeaderMap) -> Option<ServiceError> {
    let code = headers.get(SERVICE_ERROR_CODE);
    let description = headers.get(SERVICE_ERROR);
    if code.is_none() && description.is_none() {
        return None;
    }
    let code = code
        .and_then(|code| code.trim().parse::<u16>().ok())
        .unwrap_or(UNKNOWN_CODE);
    Some(ServiceError::new(code, description.unwrap_or_default()))
}

/// Sort async-nats' request error into natty's kinds by its kind, keeping it as the source.
pub(super) fn classify(err: NatsRequestError) -> RequestError {
    let kind = match err.kind() {
        NatsRequestErrorKind::TimedOut => RequestErrorKind::TimedOut,
        NatsRequestErrorKind::NoResponders => RequestErrorKind::NoResponders,
        NatsRequestErrorKind::InvalidSubject => RequestErrorKind::InvalidSubject,
        NatsRequestErrorKind::MaxPayloadExceeded => RequestErrorKind::PayloadTooLarge,
        NatsRequestErrorKind::Other => RequestErrorKind::Failed,
    };
    Error::with_source(kind, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().copied().collect()
    }

    #[test]
    fn error_headers_become_a_service_error() {
        let err = service_error(&headers(&[
            ("Nats-Service-Error-Code", "404"),
            ("Nats-Service-Error", "no such order"),
        ]));
        assert_eq!(err, Some(ServiceError::new(404, "no such order")));
        // Another client's spelling.
        let err = service_error(&headers(&[
            ("nats-service-error-code", "503"),
            ("nats-service-error", "overloaded"),
        ]));
        assert_eq!(err, Some(ServiceError::new(503, "overloaded")));
    }

    #[test]
    fn a_missing_or_odd_code_counts_as_500() {
        let err = service_error(&headers(&[("Nats-Service-Error", "broken")]));
        assert_eq!(err, Some(ServiceError::new(500, "broken")));
        let err = service_error(&headers(&[("Nats-Service-Error-Code", "teapot")]));
        assert_eq!(err, Some(ServiceError::new(500, "")));
    }

    #[test]
    fn an_answer_without_error_headers_is_no_error() {
        assert_eq!(service_error(&headers(&[("tenant", "acme")])), None);
        assert_eq!(service_error(&HeaderMap::new()), None);
    }

    #[test]
    fn async_nats_kinds_map_to_natty_kinds() {
        let cases = [
            (NatsRequestErrorKind::TimedOut, RequestErrorKind::TimedOut),
            (
                NatsRequestErrorKind::NoResponders,
                RequestErrorKind::NoResponders,
            ),
            (
                NatsRequestErrorKind::InvalidSubject,
                RequestErrorKind::InvalidSubject,
            ),
            (
                NatsRequestErrorKind::MaxPayloadExceeded,
                RequestErrorKind::PayloadTooLarge,
            ),
            (NatsRequestErrorKind::Other, RequestErrorKind::Failed),
        ];
        for (nats, natty) in cases {
            let err = classify(NatsRequestError::new(nats));
            assert_eq!(err.kind(), natty);
            assert!(
                std::error::Error::source(&err).is_some(),
                "the cause is kept"
            );
        }
    }

    #[test]
    fn a_service_error_is_read_back_from_the_error() {
        let err = Error::with_source(RequestErrorKind::Service, ServiceError::new(409, "taken"));
        assert_eq!(err.to_string(), "service error");
        assert_eq!(err.service_error().map(ServiceError::code), Some(409));
        assert!(Error::new(RequestErrorKind::TimedOut)
            .service_error()
            .is_none());
    }
}
