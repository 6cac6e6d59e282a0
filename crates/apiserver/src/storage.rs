//! How objects live in etcd: the key layout, the stored form, continue tokens, and the three
//! storage primitives every verb is built from (read one, read a page, compare-and-swap one).
//!
//! * Key: `<prefix>/<resource>/<namespace>/<name>`, cluster-scoped `<prefix>/<resource>/<name>`
//!   (kube-apiserver's layout).
//! * Value: the object's JSON with Kubernetes field names (kube-apiserver's
//!   `--storage-media-type=application/json`), readable with `etcdctl get`. resourceVersion is
//!   never stored: it is the key's `mod_revision`, filled in on every read.
//! * Writes: one Txn per write, guarded by `create_revision == 0` (create) or
//!   `mod_revision == rv` (update, delete), plus `mod_revision == m` of a fencing Lease's key
//!   when the write is fenced. A Txn retried by [`crate::etcd::Etcd`] after an ambiguous
//!   failure that then fails its compare is checked for "is what is stored now what we wrote?"
//!   ([`Store::txn`]), so a retry never turns our own success into an error.
//!
//! This module never decides *whether* a write is allowed: that is `registry.rs`.

use std::sync::Arc;

use base64::Engine;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use kl_api::{Kind, Object};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::etcd::{Etcd, EtcdError};

/// The first key of a resource's (and namespace's) range: `<prefix>/<resource>/[<ns>/]`.
pub fn list_prefix(prefix: &str, kind: Kind, namespace: &str) -> String {
    if kind.namespaced() && !namespace.is_empty() {
        format!("{prefix}/{}/{namespace}/", kind.plural())
    } else {
        format!("{prefix}/{}/", kind.plural())
    }
}

/// The key of one object.
pub fn object_key(prefix: &str, kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{prefix}/{}/{namespace}/{name}", kind.plural())
    } else {
        format!("{prefix}/{}/{name}", kind.plural())
    }
}

/// The end of the range of keys that start with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// The stored bytes of an object: its JSON without resourceVersion.
pub fn encode(obj: &Object) -> Vec<u8> {
    let mut o = obj.clone();
    o.set_type_meta();
    o.metadata_mut().resource_version.clear();
    o.to_json_bytes()
}

/// An object read from etcd, with resourceVersion = the key's mod_revision.
pub fn decode(kind: Kind, value: &[u8], mod_revision: i64) -> Result<Object, String> {
    let mut obj = Object::from_json(kind, value).map_err(|e| e.to_string())?;
    obj.set_type_meta();
    obj.metadata_mut().resource_version = mod_revision.to_string();
    Ok(obj)
}

/// What a continue token carries: kube-apiserver's `continueToken` (base64url of
/// `{"v":"meta.k8s.io/v1","rv":R,"start":"<key after the list prefix>"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinueToken {
    pub v: String,
    pub rv: i64,
    pub start: String,
}

impl ContinueToken {
    pub fn encode(rv: i64, start: &str) -> String {
        let t = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv,
            start: start.to_string(),
        };
        let json = serde_json::to_vec(&t).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(token: &str) -> Result<ContinueToken, ApiError> {
        let bad = |why: &str| ApiError::BadRequest(format!("continue key is not valid: {why}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| bad("not base64"))?;
        let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))?;
        if t.v != "meta.k8s.io/v1" {
            return Err(bad(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        if t.rv <= 0 {
            return Err(bad(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        if t.start.is_empty() || t.start.contains("..") || t.start.starts_with('/') {
            return Err(bad("start key is not valid"));
        }
        Ok(t)
    }
}

/// kube-apiserver's message for a continue token whose revision was compacted.
/// Keys per etcd Range when a list has no limit: 500 objects of JSON stay far below gRPC's
/// 4 MiB default message size, which a whole 10,000-pod namespace exceeds.
pub const LIST_CHUNK: i64 = 500;

/// The largest etcd answer the apiserver reads (a page of big objects, a batch of watch
/// events). gRPC's default is 4 MiB; etcd values may be 1.5 MiB each, so a page of `limit`
/// objects can be far bigger. kube-apiserver's etcd client has no practical limit either.
pub const MAX_ETCD_RESPONSE: usize = 1 << 30;

pub const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// One page of a list.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Object>,
    /// The revision the whole list is read at.
    pub revision: i64,
    pub continue_token: String,
    pub remaining: Option<i64>,
}

/// The guard a write must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// Create: the key must not exist.
    Absent,
    /// Update or delete: the key's mod_revision must be this.
    ModRevision(i64),
}

/// What a write does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>),
    Delete,
}

/// A fencing Lease's key and the mod_revision at which it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceGuard {
    pub key: String,
    pub mod_revision: i64,
}

/// How a compare-and-swap went.
#[derive(Debug)]
pub enum Outcome {
    /// Applied, at this revision.
    Done { revision: i64 },
    /// A compare failed; what the key holds now (value, mod_revision), and whether the fencing
    /// Lease moved.
    Failed {
        current: Option<(Vec<u8>, i64)>,
        fence_moved: bool,
    },
}

/// The apiserver's view of etcd: objects in, objects out.
#[derive(Clone)]
pub struct Store {
    pub etcd: Arc<Etcd>,
    /// `--etcd-prefix`, without a trailing slash.
    pub prefix: String,
}

impl Store {
    pub fn key(&self, kind: Kind, namespace: &str, name: &str) -> String {
        object_key(&self.prefix, kind, namespace, name)
    }

    /// Reads one key: its value and mod_revision.
    pub async fn get_raw(&self, resource: &str, key: &str) -> ApiResult<Option<(Vec<u8>, i64)>> {
        let k = key.to_string();
        let (resp, _) = self
            .etcd
            .call("get", resource, |mut c| {
                let k = k.clone();
                async move { c.get(k, None).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Reads one object (linearizable).
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> ApiResult<Option<Object>> {
        let key = self.key(kind, namespace, name);
        match self.get_raw(kind.plural(), &key).await? {
            None => Ok(None),
            Some((value, rev)) => decode(kind, &value, rev)
                .map(Some)
                .map_err(|e| ApiError::Internal(format!("decoding {key} from etcd: {e}"))),
        }
    }

    /// Reads one page of a list: up to `limit` objects (0: all) that `keep` accepts, from the
    /// start of the range or where `continue_token` says, at one revision.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        limit: i64,
        continue_token: &str,
        filtered: bool,
        keep: impl Fn(&Object) -> bool,
    ) -> ApiResult<Page> {
        let prefix = list_prefix(&self.prefix, kind, namespace);
        let end = prefix_end(prefix.as_bytes());
        let (mut start, mut revision) = if continue_token.is_empty() {
            (prefix.clone().into_bytes(), 0)
        } else {
            let t = ContinueToken::decode(continue_token)?;
            (format!("{prefix}{}", t.start).into_bytes(), t.rv)
        };
        let mut page = Page::default();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone());
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            // A page of `limit` keys per round trip (upstream reads pages of `limit` too, and
            // loops while filtering); an unpaginated list is read in chunks of
            // [`LIST_CHUNK`] at the first chunk's revision, so no single etcd answer outgrows
            // gRPC's message limit, however many objects there are.
            opts = opts.with_limit(if limit > 0 { limit } else { LIST_CHUNK });
            let s = start.clone();
            let (resp, _) = self
                .etcd
                .call("list", kind.plural(), |c| {
                    let (s, o) = (s.clone(), opts.clone());
                    let mut kv = c.kv_client().max_decoding_message_size(MAX_ETCD_RESPONSE);
                    async move { kv.get(s, Some(o)).await }
                })
                .await
                .map_err(|e| match e {
                    EtcdError::Compacted(_) if !continue_token.is_empty() => {
                        ApiError::Expired(CONTINUE_EXPIRED.to_string())
                    }
                    e => e.into(),
                })?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            let kvs = resp.kvs();
            let mut last_key: Option<Vec<u8>> = None;
            let mut consumed = 0;
            for kv in kvs {
                consumed += 1;
                last_key = Some(kv.key().to_vec());
                match decode(kind, kv.value(), kv.mod_revision()) {
                    Ok(obj) => {
                        if keep(&obj) {
                            page.items.push(obj);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "skipping an undecodable object");
                    }
                }
                if limit > 0 && page.items.len() as i64 >= limit {
                    break;
                }
            }
            let more_here = consumed < kvs.len() || resp.more();
            if limit > 0 && page.items.len() as i64 >= limit {
                if more_here {
                    if let Some(k) = last_key {
                        let mut next = k;
                        next.push(0);
                        let suffix = String::from_utf8_lossy(&next[prefix.len()..]).into_owned();
                        page.continue_token = ContinueToken::encode(revision, &suffix);
                        if !filtered {
                            page.remaining = Some((resp.count() - consumed as i64).max(0));
                        }
                    }
                }
                break;
            }
            if !resp.more() {
                break;
            }
            match last_key {
                Some(mut k) => {
                    k.push(0);
                    start = k;
                }
                None => break,
            }
        }
        page.revision = revision;
        Ok(page)
    }

    /// One compare-and-swap on `key`. See the module doc for how a retried write that was in
    /// fact applied is recognised.
    pub async fn txn(
        &self,
        resource: &str,
        key: &str,
        cond: Cond,
        write: Write,
        fence: Option<&FenceGuard>,
    ) -> ApiResult<Outcome> {
        let mut compares = vec![match cond {
            Cond::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Cond::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
        }];
        let mut on_fail = vec![TxnOp::get(key, None)];
        if let Some(f) = fence {
            compares.push(Compare::mod_revision(
                f.key.as_str(),
                CompareOp::Equal,
                f.mod_revision,
            ));
            on_fail.push(TxnOp::get(f.key.as_str(), None));
        }
        let op = match &write {
            Write::Put(v) => TxnOp::put(key, v.clone(), None),
            Write::Delete => TxnOp::delete(key, None),
        };
        let operation = match (&write, cond) {
            (Write::Put(_), Cond::Absent) => "create",
            (Write::Put(_), _) => "update",
            (Write::Delete, _) => "delete",
        };
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![op])
            .or_else(on_fail);
        let (resp, retried) = self
            .etcd
            .call(operation, resource, |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        if resp.succeeded() {
            return Ok(Outcome::Done { revision });
        }
        let mut ranges = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let current = ranges.next().and_then(|g| {
            g.kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.mod_revision()))
        });
        let fence_moved = match (fence, ranges.next()) {
            (Some(f), Some(g)) => {
                g.kvs().first().map(|kv| kv.mod_revision()) != Some(f.mod_revision)
            }
            _ => false,
        };
        if retried && !fence_moved {
            match (&write, &current) {
                (Write::Put(v), Some((now, rev))) if now == v => {
                    return Ok(Outcome::Done { revision: *rev })
                }
                (Write::Delete, None) => return Ok(Outcome::Done { revision }),
                _ => {}
            }
        }
        Ok(Outcome::Failed {
            current,
            fence_moved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::{Node, Pod, Resource};

    #[test]
    fn key_layout_is_kube_apiservers() {
        assert_eq!(
            object_key("/registry", Kind::Pod, "default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(
            object_key("/registry", Kind::Node, "", "n1"),
            "/registry/nodes/n1"
        );
        assert_eq!(
            object_key("/registry", Kind::Lease, "kube-system", "x"),
            "/registry/leases/kube-system/x"
        );
        assert_eq!(
            list_prefix("/registry", Kind::Pod, "default"),
            "/registry/pods/default/"
        );
        assert_eq!(list_prefix("/registry", Kind::Pod, ""), "/registry/pods/");
        // A cluster-scoped kind ignores the namespace.
        assert_eq!(
            list_prefix("/registry", Kind::Namespace, "default"),
            "/registry/namespaces/"
        );
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }

    #[test]
    fn resource_version_is_not_stored_but_filled_on_read() {
        let mut p = Pod::default();
        p.meta_mut().name = "web".into();
        p.meta_mut().resource_version = "42".into();
        let o = p.into_object();
        let bytes = encode(&o);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("resourceVersion"), "{text}");
        assert!(text.contains("\"kind\":\"Pod\""), "{text}");
        let back = decode(Kind::Pod, &bytes, 7).unwrap();
        assert_eq!(back.metadata().unwrap().resource_version, "7");
        assert!(decode(Kind::Node, b"{\"nope\":1}", 1).is_err());
        let n = Node::default().into_object();
        assert_eq!(
            decode(Kind::Node, &encode(&n), 3).unwrap().kind(),
            Kind::Node
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_are_checked() {
        let t = ContinueToken::encode(12, "default/web-2\u{0}");
        let d = ContinueToken::decode(&t).unwrap();
        assert_eq!((d.rv, d.start.as_str()), (12, "default/web-2\u{0}"));
        // kube-apiserver's own token decodes too.
        let upstream = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"v":"meta.k8s.io/v1","rv":5,"start":"a\u0000"}"#);
        assert_eq!(ContinueToken::decode(&upstream).unwrap().rv, 5);
        for bad in [
            "!!!".to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"not json"),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"v":"x","rv":5,"start":"a"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#),
            ContinueToken::encode(3, "../../secrets/x"),
        ] {
            assert!(
                matches!(ContinueToken::decode(&bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
