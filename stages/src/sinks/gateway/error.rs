//! The errors the gateway answers with, each a status and a JSON body
//! `{"error": "<code>", "message": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A request the gateway refuses or cannot answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A bearer token that is not known.
    InvalidToken,
    /// A known token that may not read this OBU.
    Forbidden,
    /// A path or query parameter is malformed; the text says which.
    BadRequest(&'static str),
    /// The OBU has no billed distance in the period.
    NoInvoice,
    UnknownRoute,
    MethodNotAllowed,
    /// The invoice book failed or did not answer in time.
    Unavailable,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoInvoice | ApiError::UnknownRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable code of the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NoInvoice | ApiError::UnknownRoute => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "an Authorization: Bearer header is required",
            ApiError::InvalidToken => "the bearer token is not valid",
            ApiError::Forbidden => "this token may not read invoices of this obu",
            ApiError::BadRequest(what) => what,
            ApiError::NoInvoice => "no invoice for this obu in this period",
            ApiError::UnknownRoute => "no such route",
            ApiError::MethodNotAllowed => "method not allowed on this route",
            ApiError::Unavailable => "invoices are unavailable, try again later",
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750, section 3).
    fn challenge(&self) -> Option<&'static str> {
        match self {
            ApiError::MissingToken => Some("Bearer"),
            ApiError::InvalidToken => Some("Bearer error=\"invalid_token\""),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: self.code(), message: self.message() };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}
