//! The Auth service: etcd-lite has no users or roles (clients are authenticated by their TLS
//! certificates), so every Auth RPC answers `UNIMPLEMENTED` with a message naming it.
//!
//! It is a plain tower service on the `etcdserverpb.Auth` path rather than an implementation
//! of the generated trait, because `etcd-client` does not export every Auth message type
//! (e.g. `AuthStatusRequest`), and an answer that needs no request body needs no types.

use std::{
    convert::Infallible,
    future::{ready, Ready},
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{body::Body, server::NamedService, Code, Status};

use super::record;
use crate::error::EtcdError;
use crate::node::Node;

#[derive(Clone)]
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        AuthService { node }
    }
}

impl NamedService for AuthService {
    const NAME: &'static str = "etcdserverpb.Auth";
}

impl tower::Service<http::Request<Body>> for AuthService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = rpc_name(req.uri().path());
        record(&self.node, method, Code::Unimplemented);
        tracing::debug!(method, "Auth RPC refused");
        let status: Status = EtcdError::Unimplemented(format!("Auth.{method}")).into();
        ready(Ok(status.into_http()))
    }
}

/// The RPCs of etcd's Auth service.
const AUTH_RPCS: &[&str] = &[
    "AuthEnable",
    "AuthDisable",
    "AuthStatus",
    "Authenticate",
    "UserAdd",
    "UserGet",
    "UserList",
    "UserDelete",
    "UserChangePassword",
    "UserGrantRole",
    "UserRevokeRole",
    "RoleAdd",
    "RoleGet",
    "RoleList",
    "RoleDelete",
    "RoleGrantPermission",
    "RoleRevokePermission",
];

/// `/etcdserverpb.Auth/UserAdd` → `UserAdd`. Only etcd's names come back (anything else is
/// `unknown`), so a client cannot mint metric label values.
fn rpc_name(path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or_default();
    AUTH_RPCS
        .iter()
        .find(|name| **name == last)
        .copied()
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_rpc() {
        assert_eq!(rpc_name("/etcdserverpb.Auth/Authenticate"), "Authenticate");
        assert_eq!(rpc_name("/etcdserverpb.Auth/Nonsense"), "unknown");
        assert_eq!(rpc_name(""), "unknown");
    }
}
