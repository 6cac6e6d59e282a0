//! Every way a request can fail, worded as Kubernetes words it, and the one mapping to a gRPC
//! status with the `kl-reason` metadata (the table in api.proto's header comment).
//!
//! Handlers return [`ApiError`]; only [`ApiError::into_status`] builds `tonic::Status`es, so the
//! code, the reason and the message of each failure are decided here and nowhere else.

use kl_api::{FieldErrors, Kind};
use tonic::{metadata::MetadataValue, Code, Status};

/// The metadata key carrying the Kubernetes reason (api.proto).
pub const REASON_METADATA: &str = "kl-reason";

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `pods "x" not found`
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// `pods "x" already exists`
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// `Operation cannot be fulfilled on pods "x": <why>`
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {why}")]
    Conflict {
        resource: String,
        name: String,
        why: String,
    },
    /// `Pod "x" is invalid: <field errors>`
    #[error("{kind} \"{name}\" is invalid: {errors}")]
    Invalid {
        kind: Kind,
        name: String,
        errors: FieldErrors,
    },
    /// A malformed request (bad selector, unknown resource, missing object, ...).
    #[error("{0}")]
    BadRequest(String),
    /// A resourceVersion (or continue token) older than what can be served.
    #[error("{0}")]
    Expired(String),
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    /// `namespaces "kube-system" is forbidden: this namespace may not be deleted`; without a
    /// name (a list): `pods is forbidden: ...`.
    #[error("{resource}{} is forbidden: {why}", if name.is_empty() { String::new() } else { format!(" \"{name}\"") })]
    Forbidden {
        resource: String,
        name: String,
        why: String,
    },
    /// Over `--max-requests-inflight`, or over the request size limit.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_seconds: Option<u32>,
    },
    /// A request larger than the apiserver accepts (kube-apiserver: 413).
    #[error("{0}")]
    RequestTooLarge(String),
    /// No etcd member could serve the request.
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    Timeout(String),
    /// The fencing token is stale (see api.proto's FencingToken).
    #[error("{0}")]
    Fenced(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// What a kubelet answered, or why it could not be reached (pods/log), in the kubelet's
    /// or [`crate::kubelet`]'s words. `status` is the HTTP status the apiserver answers with:
    /// 400 BadRequest, 404 NotFound, 403 Forbidden, 503 ServiceUnavailable (unreachable;
    /// without `retry-after`: the apiserver itself is fine), else 500 InternalError.
    #[error("{message}")]
    Kubelet { status: u16, message: String },
}

impl ApiError {
    pub fn not_found(kind: Kind, name: &str) -> Self {
        ApiError::NotFound {
            resource: kind.plural().to_string(),
            name: name.to_string(),
        }
    }

    pub fn already_exists(kind: Kind, name: &str) -> Self {
        ApiError::AlreadyExists {
            resource: kind.plural().to_string(),
            name: name.to_string(),
        }
    }

    pub fn conflict(resource: &str, name: &str, why: impl Into<String>) -> Self {
        ApiError::Conflict {
            resource: resource.to_string(),
            name: name.to_string(),
            why: why.into(),
        }
    }

    /// Kubernetes' optimistic-concurrency conflict.
    pub fn modified(kind: Kind, name: &str) -> Self {
        Self::conflict(
            kind.plural(),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(kind: Kind, name: &str, errors: FieldErrors) -> Self {
        ApiError::Invalid {
            kind,
            name: name.to_string(),
            errors,
        }
    }

    /// The Kubernetes reason (`kl-reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Expired(_) => "Expired",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::RequestTooLarge(_) => "RequestEntityTooLarge",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Fenced(_) => "Fenced",
            ApiError::Internal(_) => "InternalError",
            ApiError::Kubelet { status, .. } => match status {
                400 => "BadRequest",
                403 => "Forbidden",
                404 => "NotFound",
                503 => "ServiceUnavailable",
                _ => "InternalError",
            },
        }
    }

    /// The gRPC code api.proto assigns to the reason.
    pub fn code(&self) -> Code {
        match self {
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::Conflict { .. } => Code::Aborted,
            ApiError::Invalid { .. } | ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::Expired(_) => Code::OutOfRange,
            ApiError::Unauthorized(_) => Code::Unauthenticated,
            ApiError::Forbidden { .. } => Code::PermissionDenied,
            ApiError::TooManyRequests { .. } | ApiError::RequestTooLarge(_) => {
                Code::ResourceExhausted
            }
            ApiError::ServiceUnavailable(_) => Code::Unavailable,
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::Fenced(_) => Code::FailedPrecondition,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Kubelet { status, .. } => match status {
                400 => Code::InvalidArgument,
                403 => Code::PermissionDenied,
                404 => Code::NotFound,
                503 => Code::Unavailable,
                _ => Code::Internal,
            },
        }
    }

    /// The HTTP status kube-apiserver answers with: the `code` label of
    /// `apiserver_request_total`.
    pub fn http_code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Expired(_) => 410,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::RequestTooLarge(_) => 413,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::Timeout(_) => 504,
            ApiError::Fenced(_) => 412,
            ApiError::Internal(_) => 500,
            ApiError::Kubelet { status, .. } => match status {
                400 | 403 | 404 | 503 => *status,
                _ => 500,
            },
        }
    }

    /// The gRPC status: code, message, `kl-reason`, and `retry-after` when there is one.
    pub fn into_status(self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        let md = status.metadata_mut();
        md.insert(REASON_METADATA, MetadataValue::from_static(self.reason()));
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_seconds,
                ..
            } => *retry_after_seconds,
            ApiError::ServiceUnavailable(_) | ApiError::Timeout(_) => Some(1),
            _ => None,
        };
        if let Some(s) = retry_after {
            md.insert("retry-after", MetadataValue::from(s));
        }
        status
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.into_status()
    }
}

impl From<crate::etcd::EtcdError> for ApiError {
    fn from(e: crate::etcd::EtcdError) -> ApiError {
        use crate::etcd::EtcdError;
        match e {
            EtcdError::Unavailable(m) => ApiError::ServiceUnavailable(m),
            EtcdError::Timeout(m) => ApiError::Timeout(m),
            EtcdError::Compacted(m) => ApiError::Expired(m),
            EtcdError::TooLarge(m) => ApiError::RequestTooLarge(format!(
                "etcdserver: request is too large ({m}); shrink the object"
            )),
            EtcdError::Other(m) => ApiError::Internal(m),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::validation::{ErrorType, FieldError};

    fn reason(s: &Status) -> &str {
        s.metadata()
            .get(REASON_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn statuses_follow_api_proto() {
        let s = ApiError::not_found(Kind::Pod, "x").into_status();
        assert_eq!(
            (s.code(), reason(&s), s.message()),
            (Code::NotFound, "NotFound", "pods \"x\" not found")
        );
        let s = ApiError::already_exists(Kind::Namespace, "a").into_status();
        assert_eq!(
            (s.code(), reason(&s), s.message()),
            (
                Code::AlreadyExists,
                "AlreadyExists",
                "namespaces \"a\" already exists"
            )
        );
        let s = ApiError::modified(Kind::Pod, "x").into_status();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(reason(&s), "Conflict");
        assert_eq!(s.message(), "Operation cannot be fulfilled on pods \"x\": the object has been modified; please apply your changes to the latest version and try again");
        let errs = FieldErrors(vec![FieldError {
            field: "spec.containers[0].command".into(),
            error: ErrorType::Required,
            detail: String::new(),
        }]);
        let s = ApiError::invalid(Kind::Pod, "x", errs).into_status();
        assert_eq!(
            (s.code(), reason(&s), s.message()),
            (
                Code::InvalidArgument,
                "Invalid",
                "Pod \"x\" is invalid: spec.containers[0].command: Required value"
            )
        );
        let s = ApiError::Expired("too old resource version: 5 (9)".into()).into_status();
        assert_eq!((s.code(), reason(&s)), (Code::OutOfRange, "Expired"));
        let s = ApiError::TooManyRequests {
            message: "too many requests".into(),
            retry_after_seconds: Some(1),
        }
        .into_status();
        assert_eq!(
            (s.code(), reason(&s)),
            (Code::ResourceExhausted, "TooManyRequests")
        );
        assert_eq!(
            s.metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let s = ApiError::Fenced("stale".into()).into_status();
        assert_eq!((s.code(), reason(&s)), (Code::FailedPrecondition, "Fenced"));
        let s = ApiError::Unauthorized("no client certificate".into()).into_status();
        assert_eq!(
            (s.code(), reason(&s)),
            (Code::Unauthenticated, "Unauthorized")
        );
        let s = ApiError::Forbidden {
            resource: "namespaces".into(),
            name: "kube-system".into(),
            why: "this namespace may not be deleted".into(),
        }
        .into_status();
        assert_eq!(
            (s.code(), reason(&s), s.message()),
            (
                Code::PermissionDenied,
                "Forbidden",
                "namespaces \"kube-system\" is forbidden: this namespace may not be deleted"
            )
        );
        assert_eq!(ApiError::BadRequest("x".into()).http_code(), 400);
        assert_eq!(
            ApiError::ServiceUnavailable("x".into())
                .into_status()
                .code(),
            Code::Unavailable
        );
    }
}
