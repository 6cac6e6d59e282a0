//! Asserting on the gRPC status an etcd-compatible server returns. Tests compare code *and*
//! message exactly, because clients (etcdctl, client-go, etcd-client) match on them.

use std::fmt::Debug;

pub use tonic::Code;

/// The gRPC status inside an etcd-client error, if it is one.
pub fn status_of(e: &etcd_client::Error) -> Option<&tonic::Status> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        _ => None,
    }
}

/// Checks that `r` failed with exactly this gRPC code and message.
pub fn expect_status<T: Debug>(
    what: &str,
    r: Result<T, etcd_client::Error>,
    code: Code,
    message: &str,
) -> anyhow::Result<()> {
    match r {
        Ok(v) => anyhow::bail!("{what}: expected {code:?} {message:?}, got success: {v:?}"),
        Err(e) => match status_of(&e) {
            Some(s) if s.code() == code && s.message() == message => Ok(()),
            Some(s) => anyhow::bail!(
                "{what}: expected {code:?} {message:?}, got {:?} {:?}",
                s.code(),
                s.message()
            ),
            None => {
                anyhow::bail!("{what}: expected {code:?} {message:?}, got non-gRPC error {e:?}")
            }
        },
    }
}

/// Checks that `r` failed with this gRPC code (whatever the message); for errors whose text
/// comes from the gRPC library rather than from etcd.
pub fn expect_code<T: Debug>(
    what: &str,
    r: Result<T, etcd_client::Error>,
    code: Code,
) -> anyhow::Result<tonic::Status> {
    match r {
        Ok(v) => anyhow::bail!("{what}: expected {code:?}, got success: {v:?}"),
        Err(e) => match status_of(&e) {
            Some(s) if s.code() == code => Ok(s.clone()),
            Some(s) => anyhow::bail!(
                "{what}: expected {code:?}, got {:?} {:?}",
                s.code(),
                s.message()
            ),
            None => anyhow::bail!("{what}: expected {code:?}, got non-gRPC error {e:?}"),
        },
    }
}

/// Whether a Status `version` is etcd 3.4's. The tests assert what etcd 3.5 does; where 3.4
/// (Debian's `etcd-server`, used to check the tests themselves) differs, they accept 3.4's
/// behaviour only from a server that reports 3.4.
pub fn is_etcd34(version: &str) -> bool {
    version.starts_with("3.4.")
}
