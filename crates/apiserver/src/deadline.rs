//! The caller's deadline, carried to the etcd calls a request makes.
//!
//! A client that gives up after `--request-timeout` sends it as gRPC's `grpc-timeout` header.
//! [`scope`] (an axum middleware on the API port) reads it and runs the request's handler
//! with a deadline a little before the client's own: [`crate::etcd::Etcd::call`] stops
//! failing over between members at that point and answers with the reason etcd could not
//! serve (`no etcd member could serve the request within 4.5s ...`), so the client reads why
//! instead of timing out blind. kube-apiserver does the same with the `?timeout=` a kubectl
//! request carries. Without the header, the apiserver's own bound on an etcd call (20 s) applies.
//!
//! Watches are streams: their responses are produced outside the handler, so no deadline
//! reaches them.

use std::time::{Duration, Instant};

use axum::{extract::Request, middleware::Next, response::Response};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The share of the client's timeout the server may spend before answering: the rest is for
/// the answer to travel back.
const SHARE: f64 = 0.9;

/// The deadline of the request being handled, if its client sent one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `f` with `deadline` as the request's deadline (tests, and handlers that spawn work).
pub async fn with<F: std::future::Future>(deadline: Instant, f: F) -> F::Output {
    DEADLINE.scope(deadline, f).await
}

/// The axum middleware: the handler runs under the deadline `grpc-timeout` gives.
pub async fn scope(req: Request, next: Next) -> Response {
    let timeout = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match timeout {
        Some(t) => with(Instant::now() + t.mul_f64(SHARE), next.run(req)).await,
        None => next.run(req).await,
    }
}

/// gRPC's `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("4500m"),
            Some(Duration::from_millis(4500))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_deadline_is_seen_inside_the_scope_only() {
        assert_eq!(current(), None);
        let d = Instant::now() + Duration::from_secs(1);
        assert_eq!(with(d, async { current() }).await, Some(d));
        assert_eq!(current(), None);
    }
}
