//! [`ApiError`]: what a call to the apiserver can end with, built from a `tonic::Status` the way
//! kubectl reads an HTTP status.
//!
//! The apiserver puts the Kubernetes reason in the `kl-reason` metadata (api.proto, header
//! comment); a status without it is mapped from its gRPC code with the same table. A status
//! that tonic produced *locally* (it carries a source error: the connection was refused, reset,
//! or the TLS handshake failed) is a transport failure, not an answer from a server. This split
//! is what the retry policy ([`crate::retry`]) decides on, so it lives in one place.
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use tonic::Status;

/// The gRPC status code (re-exported so callers need not depend on tonic).
pub use tonic::Code;

/// The metadata key carrying the Kubernetes reason (api.proto).
pub const REASON_METADATA: &str = "kl-reason";
/// The metadata key carrying a retry hint in seconds, with `TooManyRequests`.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// A Kubernetes status reason (`metav1.StatusReason`), plus kube-lite's `Fenced`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    BadRequest,
    /// The resourceVersion asked for is older than what the server keeps (HTTP 410).
    Expired,
    Unauthorized,
    Forbidden,
    TooManyRequests,
    ServiceUnavailable,
    Timeout,
    InternalError,
    /// A write carried a stale leader-election fencing token (kube-lite only).
    Fenced,
    MethodNotAllowed,
    Unknown,
    /// A reason this client does not know, kept verbatim.
    Other(String),
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::Expired => "Expired",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
            Reason::InternalError => "InternalError",
            Reason::Fenced => "Fenced",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Unknown => "Unknown",
            Reason::Other(s) => s,
        }
    }

    /// The reason named by a `kl-reason` value (`Gone` is Kubernetes' other name for Expired).
    pub fn parse(s: &str) -> Reason {
        match s {
            "NotFound" => Reason::NotFound,
            "AlreadyExists" => Reason::AlreadyExists,
            "Conflict" => Reason::Conflict,
            "Invalid" => Reason::Invalid,
            "BadRequest" => Reason::BadRequest,
            "Expired" | "Gone" => Reason::Expired,
            "Unauthorized" => Reason::Unauthorized,
            "Forbidden" => Reason::Forbidden,
            "TooManyRequests" => Reason::TooManyRequests,
            "ServiceUnavailable" => Reason::ServiceUnavailable,
            "Timeout" => Reason::Timeout,
            "InternalError" => Reason::InternalError,
            "Fenced" => Reason::Fenced,
            "MethodNotAllowed" => Reason::MethodNotAllowed,
            "Unknown" => Reason::Unknown,
            other => Reason::Other(other.to_string()),
        }
    }

    /// The reason a server status without `kl-reason` stands for (api.proto's table).
    pub fn from_code(code: Code) -> Reason {
        match code {
            Code::NotFound => Reason::NotFound,
            Code::AlreadyExists => Reason::AlreadyExists,
            Code::Aborted => Reason::Conflict,
            Code::InvalidArgument => Reason::BadRequest,
            Code::OutOfRange => Reason::Expired,
            Code::Unauthenticated => Reason::Unauthorized,
            Code::PermissionDenied => Reason::Forbidden,
            Code::ResourceExhausted => Reason::TooManyRequests,
            Code::Unavailable => Reason::ServiceUnavailable,
            Code::DeadlineExceeded => Reason::Timeout,
            Code::Internal | Code::DataLoss => Reason::InternalError,
            Code::FailedPrecondition => Reason::Fenced,
            Code::Unimplemented => Reason::MethodNotAllowed,
            Code::Ok | Code::Cancelled | Code::Unknown => Reason::Unknown,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a request got before its connection failed: what decides whether a write may be
/// sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// No connection could be made (refused, reset during the handshake, no route): the request
    /// provably never reached a server, so even a write may be retried.
    Connect,
    /// The connection broke while the request was in flight (reset, h2 error, keep-alive
    /// timeout): a server may have applied it.
    InFlight,
    /// The TLS handshake was refused for a reason that retrying cannot fix (the server's
    /// certificate is not trusted, or ours was refused).
    Tls,
}

/// Why a call failed. `Display` is kubectl's wording.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The apiserver answered with an error status (kubectl's "Error from server").
    Status {
        reason: Reason,
        code: Code,
        message: String,
        /// The server's hint (`retry-after`) with `TooManyRequests`.
        retry_after: Option<Duration>,
    },
    /// No answer: the connection could not be made or broke (kubectl's "Unable to connect to
    /// the server").
    Transport {
        failure: TransportFailure,
        message: String,
    },
    /// No answer within the request timeout.
    Timeout { after: Duration },
    /// An answer that breaks the API contract (no object, or one of another kind).
    Unexpected { message: String },
}

impl ApiError {
    /// The Kubernetes reason, for errors the server answered with.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            ApiError::Status { reason, .. } => Some(reason),
            _ => None,
        }
    }

    fn has_reason(&self, r: Reason) -> bool {
        self.reason() == Some(&r)
    }

    pub fn is_not_found(&self) -> bool {
        self.has_reason(Reason::NotFound)
    }

    pub fn is_conflict(&self) -> bool {
        self.has_reason(Reason::Conflict)
    }

    pub fn is_already_exists(&self) -> bool {
        self.has_reason(Reason::AlreadyExists)
    }

    /// A watch or list from a resourceVersion the server no longer has: relist.
    pub fn is_expired(&self) -> bool {
        self.has_reason(Reason::Expired)
    }

    /// A write refused because its fencing token is stale: this process is no longer leader.
    pub fn is_fenced(&self) -> bool {
        self.has_reason(Reason::Fenced)
    }

    pub fn is_invalid(&self) -> bool {
        self.has_reason(Reason::Invalid) || self.has_reason(Reason::BadRequest)
    }

    /// Whether the call got no answer at all (connection or timeout).
    pub fn is_transport(&self) -> bool {
        matches!(self, ApiError::Transport { .. } | ApiError::Timeout { .. })
    }

    /// The server's `retry-after` hint.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The message without kubectl's prefix (the server's message for a status).
    pub fn message(&self) -> String {
        match self {
            ApiError::Status { message, .. }
            | ApiError::Transport { message, .. }
            | ApiError::Unexpected { message } => message.clone(),
            ApiError::Timeout { after } => timeout_message(*after),
        }
    }

    /// A copy whose message is `f(message)`: kubectl adds context *inside* the message
    /// (`Error from server (AlreadyExists): error when creating "x.yaml": pods "web" already
    /// exists`).
    pub fn map_message(&self, f: impl FnOnce(&str) -> String) -> ApiError {
        let mut e = self.clone();
        match &mut e {
            ApiError::Status { message, .. }
            | ApiError::Transport { message, .. }
            | ApiError::Unexpected { message } => *message = f(message),
            ApiError::Timeout { .. } => {}
        }
        e
    }

    pub(crate) fn unexpected(message: impl Into<String>) -> ApiError {
        ApiError::Unexpected {
            message: message.into(),
        }
    }
}

fn timeout_message(after: Duration) -> String {
    format!(
        "the request did not complete within {} (--request-timeout)",
        kl_duration(after)
    )
}

fn kl_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // kubectl prints these with "error: " in front; the binary adds it.
            ApiError::Status {
                reason: Reason::Unauthorized,
                message,
                ..
            } => {
                if message.is_empty() || message == "Unauthorized" {
                    f.write_str("You must be logged in to the server (Unauthorized)")
                } else {
                    write!(
                        f,
                        "You must be logged in to the server (Unauthorized: {message})"
                    )
                }
            }
            ApiError::Status {
                reason, message, ..
            } => write!(f, "Error from server ({reason}): {message}"),
            ApiError::Transport { message, .. } => {
                write!(f, "Unable to connect to the server: {message}")
            }
            ApiError::Timeout { after } => {
                write!(
                    f,
                    "Unable to connect to the server: {}",
                    timeout_message(*after)
                )
            }
            ApiError::Unexpected { message } => {
                write!(f, "unexpected answer from the server: {message}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// TLS alerts a server sends when it refuses *our* certificate (or its absence): the user is
/// not authenticated, as kubectl reports a 401.
const AUTH_ALERTS: [&str; 5] = [
    "CertificateRequired",
    "BadCertificate",
    "UnknownCA",
    "CertificateUnknown",
    "AccessDenied",
];

impl From<Status> for ApiError {
    fn from(status: Status) -> ApiError {
        let meta = status.metadata();
        if let Some(reason) = meta.get(REASON_METADATA).and_then(|v| v.to_str().ok()) {
            return ApiError::Status {
                reason: Reason::parse(reason),
                code: status.code(),
                message: status.message().to_string(),
                retry_after: retry_after(&status),
            };
        }
        if status.source().is_some() || looks_like_transport(&status) {
            return transport_error(&status);
        }
        ApiError::Status {
            reason: Reason::from_code(status.code()),
            code: status.code(),
            message: status.message().to_string(),
            retry_after: retry_after(&status),
        }
    }
}

fn retry_after(status: &Status) -> Option<Duration> {
    let v = status.metadata().get(RETRY_AFTER_METADATA)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A status without `kl-reason` nor a local source whose words say the connection failed (an
/// h2 reset relayed as a status, say): not an answer of the apiserver.
fn looks_like_transport(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && {
        let m = status.message().to_ascii_lowercase();
        [
            "transport error",
            "h2 protocol error",
            "connection reset",
            "connection refused",
            "broken pipe",
            "connection closed",
            "tcp connect error",
        ]
        .iter()
        .any(|p| m.contains(p))
    }
}

/// Builds the transport error of a locally produced status: its message is the status message
/// followed by each distinct cause.
fn transport_error(status: &Status) -> ApiError {
    let mut parts: Vec<String> = vec![status.message().to_string()];
    let mut connect = false;
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            connect = true;
        }
        // tonic enforcing the request's own grpc-timeout: our timeout, not a broken
        // connection (the caller fills in how long it was).
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return ApiError::Timeout {
                after: Duration::ZERO,
            };
        }
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.retain(|p| !p.is_empty());
    let message = parts.join(": ");
    if AUTH_ALERTS
        .iter()
        .any(|a| message.contains(&format!("received fatal alert: {a}")))
    {
        return ApiError::Status {
            reason: Reason::Unauthorized,
            code: Code::Unauthenticated,
            message: format!("the server refused the client certificate ({message})"),
            retry_after: None,
        };
    }
    let lower = message.to_ascii_lowercase();
    let failure = if lower.contains("invalid peer certificate")
        || lower.contains("received fatal alert")
        || lower.contains("certificate")
    {
        TransportFailure::Tls
    } else if connect || lower.contains("refused stream") {
        // A connect error never sent the request; an h2 REFUSED_STREAM means the server
        // promises it did not process it.
        TransportFailure::Connect
    } else {
        TransportFailure::InFlight
    };
    ApiError::Transport { failure, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn status(code: Code, msg: &str, reason: Option<&str>) -> Status {
        let mut s = Status::new(code, msg);
        if let Some(r) = reason {
            s.metadata_mut()
                .insert(REASON_METADATA, MetadataValue::try_from(r).unwrap());
        }
        s
    }

    #[test]
    fn server_errors_print_like_kubectl() {
        let e = ApiError::from(status(
            Code::NotFound,
            "pods \"x\" not found",
            Some("NotFound"),
        ));
        assert_eq!(
            e.to_string(),
            "Error from server (NotFound): pods \"x\" not found"
        );
        assert!(e.is_not_found());
        assert!(!e.is_conflict());
        let e = ApiError::from(status(
            Code::AlreadyExists,
            "pods \"x\" already exists",
            None,
        ));
        assert_eq!(
            e.to_string(),
            "Error from server (AlreadyExists): pods \"x\" already exists"
        );
        assert!(e.is_already_exists());
        let e = ApiError::from(status(Code::Unauthenticated, "Unauthorized", None));
        assert_eq!(
            e.to_string(),
            "You must be logged in to the server (Unauthorized)"
        );
    }

    #[test]
    fn the_kl_reason_metadata_wins_over_the_code() {
        let e = ApiError::from(status(
            Code::InvalidArgument,
            "ReplicaSet.apps \"w\" is invalid: spec.replicas: Invalid value: -1",
            Some("Invalid"),
        ));
        assert_eq!(e.reason(), Some(&Reason::Invalid));
        assert!(e.is_invalid());
        let e = ApiError::from(status(Code::FailedPrecondition, "stale", Some("Fenced")));
        assert!(e.is_fenced());
        let e = ApiError::from(status(Code::OutOfRange, "too old", Some("Gone")));
        assert!(e.is_expired());
        let e = ApiError::from(status(Code::Unknown, "x", Some("SomethingNew")));
        assert_eq!(e.reason(), Some(&Reason::Other("SomethingNew".into())));
        assert_eq!(e.to_string(), "Error from server (SomethingNew): x");
    }

    #[test]
    fn codes_map_to_reasons_as_api_proto_says() {
        for (code, reason) in [
            (Code::NotFound, Reason::NotFound),
            (Code::AlreadyExists, Reason::AlreadyExists),
            (Code::Aborted, Reason::Conflict),
            (Code::InvalidArgument, Reason::BadRequest),
            (Code::OutOfRange, Reason::Expired),
            (Code::Unauthenticated, Reason::Unauthorized),
            (Code::PermissionDenied, Reason::Forbidden),
            (Code::ResourceExhausted, Reason::TooManyRequests),
            (Code::Unavailable, Reason::ServiceUnavailable),
            (Code::DeadlineExceeded, Reason::Timeout),
            (Code::Internal, Reason::InternalError),
            (Code::FailedPrecondition, Reason::Fenced),
        ] {
            let e = ApiError::from(status(code, "m", None));
            assert_eq!(e.reason(), Some(&reason), "{code:?}");
        }
    }

    #[test]
    fn retry_after_is_read_from_metadata() {
        let mut s = status(Code::ResourceExhausted, "too many requests", None);
        s.metadata_mut()
            .insert(RETRY_AFTER_METADATA, MetadataValue::from_static("3"));
        let e = ApiError::from(s);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.reason(), Some(&Reason::TooManyRequests));
    }

    #[test]
    fn local_failures_are_transport_errors() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let s = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let e = ApiError::from(s);
        match &e {
            ApiError::Transport { failure, .. } => assert_eq!(*failure, TransportFailure::Connect),
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("Unable to connect to the server: "),
            "{e}"
        );
        assert!(e.to_string().contains("refused"), "{e}");

        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let e = ApiError::from(Status::from_error(Box::new(reset)));
        assert!(matches!(
            e,
            ApiError::Transport {
                failure: TransportFailure::InFlight,
                ..
            }
        ));
        let e = ApiError::from(Status::unknown("transport error"));
        assert!(e.is_transport(), "{e:?}");
        let e = ApiError::from(Status::from_error(Box::new(tonic::TimeoutExpired(()))));
        assert!(matches!(e, ApiError::Timeout { .. }), "{e:?}");
    }

    #[test]
    fn a_refused_client_certificate_is_unauthorized() {
        let alert = std::io::Error::other("received fatal alert: CertificateRequired");
        let e = ApiError::from(Status::from_error(Box::new(alert)));
        assert_eq!(e.reason(), Some(&Reason::Unauthorized), "{e:?}");
        let bad_server =
            std::io::Error::other("invalid peer certificate: UnknownIssuer".to_string());
        let e = ApiError::from(Status::from_error(Box::new(tonic::ConnectError(Box::new(
            bad_server,
        )))));
        assert!(
            matches!(
                e,
                ApiError::Transport {
                    failure: TransportFailure::Tls,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn map_message_adds_context_inside() {
        let e = ApiError::from(status(
            Code::AlreadyExists,
            "pods \"web\" already exists",
            Some("AlreadyExists"),
        ));
        let e = e.map_message(|m| format!("error when creating \"a.yaml\": {m}"));
        assert_eq!(
            e.to_string(),
            "Error from server (AlreadyExists): error when creating \"a.yaml\": pods \"web\" already exists"
        );
    }
}
