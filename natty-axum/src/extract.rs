//! Body and path extractors whose refusals have natty-axum's JSON shape.
//!
//! axum's own [`axum::Json`], [`axum::extract::Path`] and [`axum::body::Bytes`] answer their
//! refusals in plain text. These wrap them and map every refusal to a [`rejection`](crate::rejection)
//! type, so a client parses one error format from everything the application answers:
//!
//! | refusal | axum's | here |
//! |---|---|---|
//! | body is not JSON | 400 text | 400 [`MalformedJson`] |
//! | JSON of the wrong shape | 422 text | 422 [`JsonShapeMismatch`] |
//! | no `application/json` content type | 415 text | 415 [`UnsupportedContentType`] |
//! | body over `DefaultBodyLimit` | 413 text | 413 [`PayloadTooLarge`] |
//! | a path parameter that does not parse | 400 text | 400 [`InvalidPathParameter`] |
//!
//! They are thin: the parsing is axum's, only the rejection changes. For axum's own answers
//! without an extractor (no route, wrong method, a timeout) see [`fallback`](crate::fallback).
//!
//! # Example
//! ```no_run
//! use axum::routing::post;
//! use axum::Router;
//! use natty_axum::extract::{Json, Path};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Item {
//!     name: String,
//! }
//!
//! // `curl -d '{"nam":1}' -H 'content-type: application/json' .../items/7`
//! //   → 422 {"error":"json body does not match the expected shape","detail":"missing field `name` ..."}
//! // `curl .../items/seven` → 400 {"error":"invalid path parameter", ...}
//! async fn put_item(Path(id): Path<u32>, Json(item): Json<Item>) -> Json<Item> {
//!     let _ = id;
//!     Json(item)
//! }
//!
//! let app: Router = Router::new().route("/items/{id}", post(put_item));
//! # let _ = app;
//! ```

use axum::extract::rejection::{
    BytesRejection as AxumBytesRejection, FailedToBufferBody, JsonRejection as AxumJsonRejection,
    PathRejection as AxumPathRejection,
};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rejection::{
    cause, BodyNotRead, BytesRejection, InvalidPathParameter, JsonRejection, JsonShapeMismatch,
    MalformedJson, PathMismatch, PathRejection, PayloadTooLarge, UnsupportedContentType,
};

/// A JSON body (decoded by [`axum::Json`]) or response; refuses with [`JsonRejection`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(AxumJsonRejection::JsonDataError(err)) => {
                Err(JsonShapeMismatch::with_detail(cause(&err)).into())
            }
            Err(AxumJsonRejection::JsonSyntaxError(err)) => {
                Err(MalformedJson::with_detail(cause(&err)).into())
            }
            Err(AxumJsonRejection::MissingJsonContentType(_)) => {
                Err(UnsupportedContentType::new().into())
            }
            Err(AxumJsonRejection::BytesRejection(err)) => Err(body_rejection(err).into()),
            Err(err) => Err(BodyNotRead::with_detail(err.body_text()).into()),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The whole body as bytes (read by axum's `Bytes` extractor, within `DefaultBodyLimit`);
/// refuses with [`BytesRejection`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub bytes::Bytes);

impl<S> FromRequest<S> for Bytes
where
    S: Send + Sync,
{
    type Rejection = BytesRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        bytes::Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(body_rejection)
    }
}

fn body_rejection(err: AxumBytesRejection) -> BytesRejection {
    match err {
        AxumBytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            PayloadTooLarge::with_detail("the body is larger than this route accepts").into()
        }
        other => BodyNotRead::with_detail(cause(&other)).into(),
    }
}

/// Path parameters (parsed by [`axum::extract::Path`]); refuses with [`PathRejection`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PathRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(AxumPathRejection::FailedToDeserializePathParams(err)) => {
                Err(InvalidPathParameter::with_detail(err.body_text()).into())
            }
            Err(err) => Err(PathMismatch::with_cause(err).into()),
        }
    }
}
