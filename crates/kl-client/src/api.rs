//! The verbs: [`DynamicApi`] over [`Object`] by [`Kind`] (what kubectl needs: the kind is only
//! known at run time) and the typed [`Api<K>`] on top of it (what controllers use).
//!
//! Reads retry transient failures; writes are sent again only when they provably never reached
//! a server (see [`crate::retry`]). A write may carry a [`FencingToken`]
//! ([`DynamicApi::with_fencing`]): the apiserver refuses it (`Fenced`) once the token's Lease
//! has moved on, so a paused ex-leader cannot act.
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kl_api::{
    BindRequest, CreateRequest, DeleteRequest, FencingToken, GetRequest, Kind, ListRequest, Object,
    Pod, PodLogsRequest, Resource, UpdateRequest, WatchRequest,
};
use tonic::Code;

use crate::client::Client;
use crate::error::{ApiError, Reason};
use crate::params::{DeleteParams, ListParams, LogParams, WatchParams};
use crate::retry::Idempotency::{Idempotent, Mutating, Relayed};
use crate::watch::{stream_of, WatchStream};

/// A container's log as it arrives: chunks as the kubelet wrote them (not split on lines).
/// Ends when the log does (with `follow`, when the container exits); a failure is the last
/// item.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Bytes, ApiError>> + Send>>;

/// One page (or, from `list_all`, every page) of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectList<T> {
    pub items: Vec<T>,
    /// The version the list was read at: watch from here.
    pub resource_version: String,
    /// Non-empty when more items remain: pass it as [`ListParams::continue_token`].
    pub continue_token: String,
    pub remaining_item_count: Option<i64>,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOutcome<T> {
    /// The object as removed, or as it now stands when removal is pending.
    pub object: Option<T>,
    /// False while the object still exists (graceful pod deletion, finalizers).
    pub deleted: bool,
}

/// The verbs over objects of one kind, in one namespace (or all, or none for cluster-scoped
/// kinds). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamicApi {
    client: Client,
    kind: Kind,
    /// "" = every namespace (lists and watches), or a cluster-scoped kind.
    namespace: String,
    fencing: Option<FencingToken>,
}

impl DynamicApi {
    /// `namespace` "" means every namespace; it is ignored for cluster-scoped kinds.
    pub fn new(client: Client, kind: Kind, namespace: &str) -> DynamicApi {
        DynamicApi {
            client,
            kind,
            namespace: if kind.namespaced() {
                namespace.to_string()
            } else {
                String::new()
            },
            fencing: None,
        }
    }

    /// Every write of this Api carries `token` from now on.
    pub fn with_fencing(mut self, token: FencingToken) -> DynamicApi {
        self.fencing = Some(token);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn get(&self, name: &str) -> Result<Object, ApiError> {
        let msg = GetRequest {
            resource: self.kind.plural().to_string(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
        };
        let typed = self
            .client
            .call("get", Idempotent, |mut c, req| {
                let msg = msg.clone();
                async move { c.get(req.request(msg)).await }
            })
            .await?;
        self.expect_object(Object::from_typed(typed))
    }

    /// One page of objects (all of them when `lp.limit` is 0).
    pub async fn list(&self, lp: &ListParams) -> Result<ObjectList<Object>, ApiError> {
        let msg = ListRequest {
            resource: self.kind.plural().to_string(),
            namespace: self.namespace.clone(),
            label_selector: lp.label_selector.clone(),
            field_selector: lp.field_selector.clone(),
            limit: lp.limit,
            r#continue: lp.continue_token.clone(),
        };
        let resp = self
            .client
            .call("list", Idempotent, |mut c, req| {
                let msg = msg.clone();
                async move { c.list(req.request(msg)).await }
            })
            .await?;
        let items = resp
            .items
            .into_iter()
            .map(|t| self.expect_object(Object::from_typed(t)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ObjectList {
            items,
            resource_version: resp.resource_version,
            continue_token: resp.r#continue,
            remaining_item_count: resp.remaining_item_count,
        })
    }

    /// Every page, following continue tokens (pages of `lp.limit`); the version is the first
    /// page's, which all pages are read at.
    pub async fn list_all(&self, lp: &ListParams) -> Result<ObjectList<Object>, ApiError> {
        let mut page = self.list(lp).await?;
        let mut items = std::mem::take(&mut page.items);
        while !page.continue_token.is_empty() {
            let next = lp.clone().continue_token(&page.continue_token);
            let mut more = self.list(&next).await?;
            items.append(&mut more.items);
            page.continue_token = more.continue_token;
        }
        Ok(ObjectList {
            items,
            resource_version: page.resource_version,
            continue_token: String::new(),
            remaining_item_count: None,
        })
    }

    pub async fn create(&self, object: Object) -> Result<Object, ApiError> {
        let object = self.prepare(object)?;
        let msg = CreateRequest {
            object: Some(object.into_typed()),
            fencing: self.fencing.clone(),
        };
        let typed = self
            .client
            .call("create", Mutating, |mut c, req| {
                let msg = msg.clone();
                async move { c.create(req.request(msg)).await }
            })
            .await?;
        self.expect_object(Object::from_typed(typed))
    }

    /// Replaces the object; it must carry the resourceVersion it was read at (else Conflict).
    pub async fn update(&self, object: Object) -> Result<Object, ApiError> {
        self.update_inner(object, false).await
    }

    /// Replaces only the object's status.
    pub async fn update_status(&self, object: Object) -> Result<Object, ApiError> {
        self.update_inner(object, true).await
    }

    async fn update_inner(&self, object: Object, status: bool) -> Result<Object, ApiError> {
        let object = self.prepare(object)?;
        let msg = UpdateRequest {
            object: Some(object.into_typed()),
            fencing: self.fencing.clone(),
        };
        let typed = self
            .client
            .call(
                if status { "update_status" } else { "update" },
                Mutating,
                |mut c, req| {
                    let msg = msg.clone();
                    async move {
                        if status {
                            c.update_status(req.request(msg)).await
                        } else {
                            c.update(req.request(msg)).await
                        }
                    }
                },
            )
            .await?;
        self.expect_object(Object::from_typed(typed))
    }

    pub async fn delete(
        &self,
        name: &str,
        dp: &DeleteParams,
    ) -> Result<DeleteOutcome<Object>, ApiError> {
        let msg = DeleteRequest {
            resource: self.kind.plural().to_string(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
            grace_period_seconds: dp.grace_period_seconds,
            preconditions: dp.preconditions.clone(),
            fencing: self.fencing.clone(),
            propagation_policy: dp.propagation_policy.clone().unwrap_or_default(),
        };
        let resp = self
            .client
            .call("delete", Mutating, |mut c, req| {
                let msg = msg.clone();
                async move { c.delete(req.request(msg)).await }
            })
            .await?;
        let object = match resp.object.and_then(Object::from_typed) {
            Some(o) => Some(self.expect_object(Some(o))?),
            None => None,
        };
        Ok(DeleteOutcome {
            object,
            deleted: resp.deleted,
        })
    }

    /// Starts a watch from `resource_version` ("" or "0": first an ADDED per existing object).
    /// Setting it up is retried like a read; the stream itself is not resumed (see
    /// [`crate::watch`]).
    pub async fn watch(
        &self,
        wp: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream<Object>, ApiError> {
        let msg = WatchRequest {
            resource: self.kind.plural().to_string(),
            namespace: self.namespace.clone(),
            label_selector: wp.label_selector.clone(),
            field_selector: wp.field_selector.clone(),
            resource_version: resource_version.to_string(),
            allow_watch_bookmarks: wp.bookmarks,
        };
        let streaming = self
            .client
            .call_bounded("watch", Idempotent, false, |mut c, req| {
                let msg = msg.clone();
                async move { c.watch(req.request(msg)).await }
            })
            .await?;
        let kind = self.kind;
        Ok(Box::pin(stream_of(streaming).map(move |item| {
            let ev = item?;
            match ev.object() {
                Some(o) if o.kind() != kind => Err(ApiError::unexpected(format!(
                    "a {} in a watch of {}",
                    o.kind(),
                    kind.plural()
                ))),
                _ => Ok(ev),
            }
        })))
    }

    /// Sets the object's type meta and, for a namespaced kind, fills in this Api's namespace
    /// (refusing an object of another namespace, as the apiserver does on a REST path).
    fn prepare(&self, mut object: Object) -> Result<Object, ApiError> {
        if object.kind() != self.kind {
            return Err(ApiError::Status {
                reason: Reason::BadRequest,
                code: Code::InvalidArgument,
                message: format!("a {} sent to the {} API", object.kind(), self.kind.plural()),
                retry_after: None,
            });
        }
        object.set_type_meta();
        if self.kind.namespaced() && !self.namespace.is_empty() {
            let meta = object.metadata_mut();
            if meta.namespace.is_empty() {
                meta.namespace = self.namespace.clone();
            } else if meta.namespace != self.namespace {
                return Err(ApiError::Status {
                    reason: Reason::BadRequest,
                    code: Code::InvalidArgument,
                    message: "the namespace of the provided object does not match the namespace sent on the request".into(),
                    retry_after: None,
                });
            }
        }
        Ok(object)
    }

    fn expect_object(&self, o: Option<Object>) -> Result<Object, ApiError> {
        match o {
            Some(o) if o.kind() == self.kind => Ok(o),
            Some(o) => Err(ApiError::unexpected(format!(
                "a {} where a {} was expected",
                o.kind(),
                self.kind
            ))),
            None => Err(ApiError::unexpected(format!(
                "no object where a {} was expected",
                self.kind
            ))),
        }
    }
}

/// The verbs over one kind's own type: `Api<Pod>`, `Api<Node>`, ...
#[derive(Debug)]
pub struct Api<K> {
    dynamic: DynamicApi,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            dynamic: self.dynamic.clone(),
            _kind: PhantomData,
        }
    }
}

fn typed<K: Resource>(o: Object) -> Result<K, ApiError> {
    let kind = o.kind();
    K::from_object(o)
        .ok_or_else(|| ApiError::unexpected(format!("a {kind} where a {} was expected", K::KIND)))
}

fn typed_list<K: Resource>(l: ObjectList<Object>) -> Result<ObjectList<K>, ApiError> {
    Ok(ObjectList {
        items: l.items.into_iter().map(typed).collect::<Result<_, _>>()?,
        resource_version: l.resource_version,
        continue_token: l.continue_token,
        remaining_item_count: l.remaining_item_count,
    })
}

impl<K: Resource> Api<K> {
    /// Objects of `namespace` ("" = every namespace, for lists and watches).
    pub fn namespaced(client: Client, namespace: &str) -> Api<K> {
        Api {
            dynamic: DynamicApi::new(client, K::KIND, namespace),
            _kind: PhantomData,
        }
    }

    /// Objects of the kubeconfig context's namespace.
    pub fn default_namespaced(client: Client) -> Api<K> {
        let ns = client.default_namespace().to_string();
        Api::namespaced(client, &ns)
    }

    /// A cluster-scoped kind, or a namespaced kind across every namespace.
    pub fn all(client: Client) -> Api<K> {
        Api::namespaced(client, "")
    }

    /// Every write of this Api carries `token` from now on.
    pub fn with_fencing(self, token: FencingToken) -> Api<K> {
        Api {
            dynamic: self.dynamic.with_fencing(token),
            _kind: PhantomData,
        }
    }

    pub fn dynamic(&self) -> &DynamicApi {
        &self.dynamic
    }

    pub async fn get(&self, name: &str) -> Result<K, ApiError> {
        typed(self.dynamic.get(name).await?)
    }

    /// `get`, with NotFound as None.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, ApiError> {
        match self.get(name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>, ApiError> {
        typed_list(self.dynamic.list(lp).await?)
    }

    pub async fn list_all(&self, lp: &ListParams) -> Result<ObjectList<K>, ApiError> {
        typed_list(self.dynamic.list_all(lp).await?)
    }

    pub async fn create(&self, k: K) -> Result<K, ApiError> {
        typed(self.dynamic.create(k.into_object()).await?)
    }

    pub async fn update(&self, k: K) -> Result<K, ApiError> {
        typed(self.dynamic.update(k.into_object()).await?)
    }

    pub async fn update_status(&self, k: K) -> Result<K, ApiError> {
        typed(self.dynamic.update_status(k.into_object()).await?)
    }

    pub async fn delete(
        &self,
        name: &str,
        dp: &DeleteParams,
    ) -> Result<DeleteOutcome<K>, ApiError> {
        let out = self.dynamic.delete(name, dp).await?;
        Ok(DeleteOutcome {
            object: out.object.map(typed).transpose()?,
            deleted: out.deleted,
        })
    }

    pub async fn watch(
        &self,
        wp: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ApiError> {
        let stream = self.dynamic.watch(wp, resource_version).await?;
        Ok(Box::pin(stream.map(|item| {
            item?.map(K::from_object).ok_or_else(|| {
                ApiError::unexpected(format!("a watch event that is not a {}", K::KIND))
            })
        })))
    }
}

impl Api<Pod> {
    /// The pods/binding subresource: sets `spec.nodeName` if, and only if, it is unset (else
    /// Conflict). `uid`, when given, must be the pod's.
    pub async fn bind(
        &self,
        name: &str,
        node_name: &str,
        uid: Option<&str>,
    ) -> Result<Pod, ApiError> {
        let msg = BindRequest {
            namespace: self.dynamic.namespace.clone(),
            name: name.to_string(),
            node_name: node_name.to_string(),
            uid: uid.unwrap_or_default().to_string(),
            fencing: self.dynamic.fencing.clone(),
        };
        let t = self
            .dynamic
            .client
            .call("bind", Mutating, |mut c, req| {
                let msg = msg.clone();
                async move { c.bind(req.request(msg)).await }
            })
            .await?;
        typed(self.dynamic.expect_object(Object::from_typed(t))?)
    }

    /// The pods/log subresource: the log of one of the pod's containers, streamed from its
    /// node's kubelet through the apiserver. Setting it up is bounded by the request timeout
    /// and retried like a read (not when the kubelet cannot be reached); the stream itself is
    /// not bounded (`follow` runs until the container exits) and not resumed. Dropping the
    /// stream cancels the call, and the apiserver drops its connection to the kubelet.
    pub async fn logs(&self, name: &str, lp: &LogParams) -> Result<LogStream, ApiError> {
        let msg = PodLogsRequest {
            namespace: self.dynamic.namespace.clone(),
            name: name.to_string(),
            container: lp.container.clone(),
            follow: lp.follow,
            tail_lines: lp.tail_lines,
            previous: lp.previous,
            timestamps: lp.timestamps,
            limit_bytes: lp.limit_bytes,
        };
        let streaming = self
            .dynamic
            .client
            .call_bounded("logs", Relayed, false, |mut c, req| {
                let msg = msg.clone();
                async move { c.pod_logs(req.request(msg)).await }
            })
            .await?;
        Ok(Box::pin(futures::stream::unfold(
            Some(streaming),
            |state| async move {
                let mut inner = state?;
                match inner.message().await {
                    Ok(Some(chunk)) => Some((Ok(chunk.data), Some(inner))),
                    Ok(None) => None,
                    Err(status) => Some((Err(ApiError::from(status)), None)),
                }
            },
        )))
    }
}
