//! The verbs, over storage: Create, Get, List, Update, UpdateStatus, Delete, Bind, and the
//! watch subscription. Each write reads the current object, decides with `strategy.rs`, and
//! writes with one compare-and-swap; when the compare fails because someone else wrote first
//! and the client did not pin a resourceVersion, it retries on the object the failed compare
//! answered with (upstream's `GuaranteedUpdate`), a bounded number of times. Update,
//! UpdateStatus and Bind start from the watch cache's copy of the object when it has one, as
//! upstream's Cacher does, and decide again on etcd's copy before failing on the cache's.
//!
//! Authentication, limits, metrics and spans are `service.rs`'s; this module sees plain
//! requests and answers with objects or [`ApiError`]s.

use std::time::SystemTime;

use kl_api::selector::{supported_fields, FieldSelector, LabelSelector};
use kl_api::{
    set_defaults, validate, validate_update, CreateRequest, DeleteRequest, FencingToken, Kind,
    ListRequest, Object, Pod, WatchRequest,
};

use crate::error::{ApiError, ApiResult};
use crate::fencing;
use crate::storage::{self, Cond, FenceGuard, Outcome, Page, Store, Write};
use crate::strategy::{self, DeleteAction, UpdateMode};
use crate::watch_cache::{Caches, Filter, Subscription};

/// The finalizer an orphaning delete adds (upstream's `metav1.FinalizerOrphanDependents`).
pub const FINALIZER_ORPHAN: &str = "orphan";

/// How many times a write re-reads and retries after losing a race it did not ask to lose.
const MAX_ATTEMPTS: usize = 8;

/// The kind a request's `resource` names.
pub fn kind_of(resource: &str) -> ApiResult<Kind> {
    Kind::from_resource(resource).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the server doesn't have a resource type {resource:?}"
        ))
    })
}

/// The namespace a request acts in: none for cluster-scoped kinds, `default` when unset.
pub fn namespace_for(kind: Kind, ns: &str) -> String {
    if !kind.namespaced() {
        String::new()
    } else if ns.is_empty() {
        "default".to_string()
    } else {
        ns.to_string()
    }
}

fn parse_rv(rv: &str) -> ApiResult<Option<i64>> {
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))
}

/// The state a write is decided on.
struct Base {
    obj: Object,
    /// Its mod_revision: the compare-and-swap's condition.
    rev: i64,
    /// Read from etcd just now (else: the watch cache's copy, which may lag).
    current: bool,
}

impl Base {
    /// From etcd's answer (a read, or a failed compare-and-swap's).
    fn from_etcd(kind: Kind, key: &str, found: Option<(Vec<u8>, i64)>) -> ApiResult<Option<Base>> {
        let Some((value, rev)) = found else {
            return Ok(None);
        };
        let obj = storage::decode(kind, &value, rev)
            .map_err(|e| ApiError::Internal(format!("decoding {key}: {e}")))?;
        Ok(Some(Base {
            obj,
            rev,
            current: true,
        }))
    }
}

/// The verbs.
#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub caches: Caches,
}

impl Registry {
    /// A compare-and-swap, fenced when `fencing` is given: the fence is checked before each
    /// attempt, and re-checked when the Lease moved under the write.
    async fn cas(
        &self,
        kind: Kind,
        key: &str,
        cond: Cond,
        write: Write,
        fencing: Option<&FencingToken>,
    ) -> ApiResult<Outcome> {
        for _ in 0..MAX_ATTEMPTS {
            let guard: Option<FenceGuard> = match fencing {
                Some(t) => Some(fencing::check(&self.store, t).await?),
                None => None,
            };
            match self
                .store
                .txn(kind.plural(), key, cond, write.clone(), guard.as_ref())
                .await?
            {
                Outcome::Failed {
                    fence_moved: true, ..
                } => continue,
                o => return Ok(o),
            }
        }
        Err(ApiError::Fenced(
            "the fencing lease kept changing during the write; retry".into(),
        ))
    }

    /// Where an update or a bind starts: the watch cache's copy of the object when it has one,
    /// else etcd's (None: not found). Upstream's Cacher does the same (GuaranteedUpdate's
    /// `cachedExistingObject`): it saves the write a read of etcd, and a stale copy costs
    /// nothing but a retry, since the compare-and-swap is on the copy's mod_revision and a
    /// failed one answers with etcd's current object.
    async fn base(&self, kind: Kind, key: &str) -> ApiResult<Option<Base>> {
        if let Some(o) = self.caches.get(kind).get(key) {
            let rev = o
                .metadata()
                .and_then(|m| m.resource_version.parse::<i64>().ok());
            if let Some(rev) = rev {
                return Ok(Some(Base {
                    obj: (*o).clone(),
                    rev,
                    current: false,
                }));
            }
        }
        self.current(kind, key).await
    }

    /// The object under `key` as etcd holds it now (None: not found).
    async fn current(&self, kind: Kind, key: &str) -> ApiResult<Option<Base>> {
        let found = self.store.get_raw(kind.plural(), key).await?;
        Base::from_etcd(kind, key, found)
    }

    /// `err`, decided on `rev` of the object: final if that was etcd's current state; if it
    /// was the cache's copy, etcd's state to decide again on, unless that is the same revision
    /// (then `err` stands). Upstream's GuaranteedUpdate does this with a cached object.
    async fn recheck(
        &self,
        kind: Kind,
        key: &str,
        rev: i64,
        current: bool,
        err: ApiError,
    ) -> ApiResult<Option<Base>> {
        if current {
            return Err(err);
        }
        match self.current(kind, key).await? {
            Some(b) if b.rev == rev => Err(err),
            fresh => Ok(fresh),
        }
    }

    /// Refuses content in a namespace that does not exist or is being deleted (upstream's
    /// NamespaceLifecycle admission).
    async fn check_namespace(&self, ns: &str) -> ApiResult<()> {
        let key = self.store.key(Kind::Namespace, "", ns);
        let cached = self.caches.get(Kind::Namespace).get(&key);
        let found = match cached {
            Some(o) => Some((*o).clone()),
            // The cache may lag a namespace created a moment ago: ask etcd.
            None => self.store.get(Kind::Namespace, "", ns).await?,
        };
        match found {
            None => Err(ApiError::not_found(Kind::Namespace, ns)),
            Some(o) if o.metadata().is_some_and(|m| !m.deletion_timestamp.is_empty()) => {
                Err(ApiError::Forbidden {
                    resource: "namespaces".into(),
                    name: ns.into(),
                    why: format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                })
            }
            Some(_) => Ok(()),
        }
    }

    pub async fn create(&self, req: CreateRequest) -> ApiResult<Object> {
        let mut obj = req
            .object
            .and_then(Object::from_typed)
            .ok_or_else(|| ApiError::BadRequest("the request carries no object".into()))?;
        self.create_object(&mut obj, req.fencing.as_ref()).await?;
        Ok(obj)
    }

    /// Creates `obj` (defaulted, named, validated); on success `obj` is the stored object.
    pub async fn create_object(
        &self,
        obj: &mut Object,
        fencing: Option<&FencingToken>,
    ) -> ApiResult<()> {
        set_defaults(obj);
        let kind = obj.kind();
        let meta = obj.metadata().cloned().unwrap_or_default();
        if !meta.resource_version.is_empty() {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let generate = meta.name.is_empty() && !meta.generate_name.is_empty();
        // As upstream (RetryGenerateName): a generated name that is taken is drawn again.
        let attempts = if generate { MAX_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            let mut o = obj.clone();
            if generate {
                o.metadata_mut().name = strategy::generate_name(&meta.generate_name);
            }
            strategy::prepare_for_create(&mut o, SystemTime::now());
            if let Err(errs) = validate(&o) {
                let name = if o.name().is_empty() {
                    meta.generate_name.clone()
                } else {
                    o.name().to_string()
                };
                return Err(ApiError::invalid(kind, &name, errs));
            }
            if kind.namespaced() {
                self.check_namespace(o.namespace()).await?;
            }
            let key = self.store.key(kind, o.namespace(), o.name());
            match self
                .cas(
                    kind,
                    &key,
                    Cond::Absent,
                    Write::Put(storage::encode(&o)),
                    fencing,
                )
                .await?
            {
                Outcome::Done { revision } => {
                    o.metadata_mut().resource_version = revision.to_string();
                    *obj = o;
                    return Ok(());
                }
                Outcome::Failed { .. } if generate => continue,
                Outcome::Failed { .. } => return Err(ApiError::already_exists(kind, o.name())),
            }
        }
        Err(ApiError::already_exists(kind, &meta.generate_name))
    }

    pub async fn get(&self, resource: &str, ns: &str, name: &str) -> ApiResult<Object> {
        let kind = kind_of(resource)?;
        let ns = namespace_for(kind, ns);
        self.store
            .get(kind, &ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    pub async fn list(&self, req: &ListRequest) -> ApiResult<(Kind, Page)> {
        let kind = kind_of(&req.resource)?;
        let filter = parse_filter(kind, &req.label_selector, &req.field_selector)?;
        if req.limit < 0 {
            return Err(ApiError::BadRequest(format!(
                "limit must be >= 0, got {}",
                req.limit
            )));
        }
        let ns = if kind.namespaced() {
            req.namespace.clone()
        } else {
            String::new()
        };
        let filtered = !filter.labels.is_empty() || !filter.fields.is_empty();
        let page = self
            .store
            .list(kind, &ns, req.limit, &req.r#continue, filtered, |o| {
                filter
                    .labels
                    .matches(&o.metadata().map(|m| m.labels.clone()).unwrap_or_default())
                    && filter.fields.matches(o)
            })
            .await?;
        Ok((kind, page))
    }

    /// Update and UpdateStatus.
    pub async fn update(
        &self,
        object: Option<kl_api::TypedObject>,
        fencing: Option<&FencingToken>,
        mode: UpdateMode,
    ) -> ApiResult<Object> {
        let mut new = object
            .and_then(Object::from_typed)
            .ok_or_else(|| ApiError::BadRequest("the request carries no object".into()))?;
        set_defaults(&mut new);
        let kind = new.kind();
        if mode == UpdateMode::Status && !strategy::has_status(kind) {
            return Err(ApiError::BadRequest(format!(
                "{} have no status subresource",
                kind.plural()
            )));
        }
        let name = new.name().to_string();
        if name.is_empty() {
            return Err(ApiError::BadRequest("metadata.name is required".into()));
        }
        let pinned = parse_rv(
            &new.metadata()
                .map(|m| m.resource_version.clone())
                .unwrap_or_default(),
        )?;
        let key = self.store.key(kind, new.namespace(), &name);
        let mut base = self.base(kind, &key).await?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(Base {
                obj: old,
                rev,
                current,
            }) = base.take()
            else {
                return Err(ApiError::not_found(kind, &name));
            };
            if pinned.is_some_and(|p| p != rev) {
                base = self
                    .recheck(kind, &key, rev, current, ApiError::modified(kind, &name))
                    .await?;
                continue;
            }
            let mut next = strategy::prepare_for_update(&new, &old, mode);
            next.metadata_mut().resource_version = rev.to_string();
            if let Err(errs) = validate_update(&next, &old) {
                base = self
                    .recheck(
                        kind,
                        &key,
                        rev,
                        current,
                        ApiError::invalid(kind, &name, errs),
                    )
                    .await?;
                continue;
            }
            if strategy::remove_after_update(&next) {
                match self
                    .cas(kind, &key, Cond::ModRevision(rev), Write::Delete, fencing)
                    .await?
                {
                    Outcome::Done { .. } => {
                        tracing::info!(resource = kind.plural(), name = %name, "last finalizer removed; object deleted");
                        return Ok(next);
                    }
                    Outcome::Failed { current: None, .. } => {
                        return Err(ApiError::not_found(kind, &name))
                    }
                    Outcome::Failed { .. } if pinned.is_some() => {
                        return Err(ApiError::modified(kind, &name))
                    }
                    Outcome::Failed { current, .. } => {
                        base = Base::from_etcd(kind, &key, current)?;
                        continue;
                    }
                }
            }
            if strategy::same_content(&next, &old) {
                if !current {
                    // A no-op on the cache's copy says nothing of etcd's: decide on etcd's
                    // (upstream does the same).
                    base = self.current(kind, &key).await?;
                    continue;
                }
                return Ok(old);
            }
            match self
                .cas(
                    kind,
                    &key,
                    Cond::ModRevision(rev),
                    Write::Put(storage::encode(&next)),
                    fencing,
                )
                .await?
            {
                Outcome::Done { revision } => {
                    next.metadata_mut().resource_version = revision.to_string();
                    return Ok(next);
                }
                Outcome::Failed { current: None, .. } => {
                    return Err(ApiError::not_found(kind, &name))
                }
                Outcome::Failed { .. } if pinned.is_some() => {
                    return Err(ApiError::modified(kind, &name))
                }
                Outcome::Failed { current, .. } => {
                    base = Base::from_etcd(kind, &key, current)?;
                    continue;
                }
            }
        }
        Err(ApiError::modified(kind, &name))
    }

    /// Delete: the object as removed or as it now stands, and whether it is gone.
    pub async fn delete(&self, req: &DeleteRequest) -> ApiResult<(Object, bool)> {
        let kind = kind_of(&req.resource)?;
        let ns = namespace_for(kind, &req.namespace);
        let name = req.name.as_str();
        if kind == Kind::Namespace && strategy::SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden {
                resource: "namespaces".into(),
                name: name.into(),
                why: "this namespace may not be deleted".into(),
            });
        }
        let orphan = match req.propagation_policy.as_str() {
            "" | "Background" => false,
            "Orphan" => true,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "propagationPolicy: Unsupported value: {other:?}: supported values: \"Background\", \"Orphan\""
                )))
            }
        };
        let pre = req.preconditions.clone().unwrap_or_default();
        let pinned = parse_rv(&pre.resource_version)?;
        let key = self.store.key(kind, &ns, name);
        for _ in 0..MAX_ATTEMPTS {
            let Some((value, rev)) = self.store.get_raw(kind.plural(), &key).await? else {
                return Err(ApiError::not_found(kind, name));
            };
            let old = storage::decode(kind, &value, rev)
                .map_err(|e| ApiError::Internal(format!("decoding {key}: {e}")))?;
            let meta = old.metadata().cloned().unwrap_or_default();
            if !pre.uid.is_empty() && pre.uid != meta.uid {
                return Err(ApiError::conflict(
                    kind.plural(),
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        pre.uid, meta.uid
                    ),
                ));
            }
            if let Some(p) = pinned {
                if p != rev {
                    return Err(ApiError::conflict(
                        kind.plural(),
                        name,
                        format!(
                            "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {rev}"
                        ),
                    ));
                }
            }
            // Orphan (upstream's DeleteOptions.propagationPolicy): the `orphan` finalizer holds
            // the object until the garbage collector has released its dependents.
            let mut subject = old.clone();
            let add_orphan = orphan && !meta.finalizers.iter().any(|f| f == FINALIZER_ORPHAN);
            if add_orphan {
                subject
                    .metadata_mut()
                    .finalizers
                    .push(FINALIZER_ORPHAN.to_string());
            }
            let action = match strategy::decide_delete(
                &subject,
                req.grace_period_seconds,
                SystemTime::now(),
            ) {
                // Already being deleted: only the finalizer is new.
                DeleteAction::Unchanged if add_orphan => DeleteAction::Mark(Box::new(subject)),
                a => a,
            };
            let (write, result) = match action {
                DeleteAction::Unchanged => return Ok((old, false)),
                DeleteAction::Remove => (Write::Delete, None),
                DeleteAction::Mark(o) => (Write::Put(storage::encode(&o)), Some(*o)),
            };
            match self
                .cas(
                    kind,
                    &key,
                    Cond::ModRevision(rev),
                    write,
                    req.fencing.as_ref(),
                )
                .await?
            {
                Outcome::Done { revision } => {
                    return Ok(match result {
                        None => (old, true),
                        Some(mut o) => {
                            o.metadata_mut().resource_version = revision.to_string();
                            (o, false)
                        }
                    })
                }
                Outcome::Failed { current: None, .. } => {
                    return Err(ApiError::not_found(kind, name))
                }
                Outcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::modified(kind, name))
    }

    /// The pods/binding subresource.
    pub async fn bind(&self, req: &kl_api::BindRequest) -> ApiResult<Object> {
        let ns = namespace_for(Kind::Pod, &req.namespace);
        if req.node_name.is_empty() {
            return Err(ApiError::BadRequest(
                "binding: target.name (node_name) is required".into(),
            ));
        }
        let key = self.store.key(Kind::Pod, &ns, &req.name);
        let mut base = self.base(Kind::Pod, &key).await?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(Base { obj, rev, current }) = base.take() else {
                return Err(ApiError::not_found(Kind::Pod, &req.name));
            };
            let Object::Pod(mut pod) = obj else {
                return Err(ApiError::Internal(format!("{key} is not a pod")));
            };
            if let Err(e) = strategy::bind(&mut pod, &req.node_name, &req.uid, SystemTime::now()) {
                base = self.recheck(Kind::Pod, &key, rev, current, e).await?;
                continue;
            }
            let obj = <Pod as kl_api::Resource>::into_object(pod);
            match self
                .cas(
                    Kind::Pod,
                    &key,
                    Cond::ModRevision(rev),
                    Write::Put(storage::encode(&obj)),
                    req.fencing.as_ref(),
                )
                .await?
            {
                Outcome::Done { revision } => {
                    let mut obj = obj;
                    obj.metadata_mut().resource_version = revision.to_string();
                    return Ok(obj);
                }
                Outcome::Failed { current: None, .. } => {
                    return Err(ApiError::not_found(Kind::Pod, &req.name))
                }
                Outcome::Failed { current, .. } => {
                    base = Base::from_etcd(Kind::Pod, &key, current)?;
                    continue;
                }
            }
        }
        Err(ApiError::modified(Kind::Pod, &req.name))
    }

    /// Starts a watch: its kind and subscription.
    pub async fn watch(&self, req: &WatchRequest) -> ApiResult<(Kind, Subscription)> {
        let kind = kind_of(&req.resource)?;
        let mut filter = parse_filter(kind, &req.label_selector, &req.field_selector)?;
        filter.namespace = if kind.namespaced() {
            req.namespace.clone()
        } else {
            String::new()
        };
        let from = match req.resource_version.as_str() {
            "" | "0" => None,
            rv => parse_rv(rv)?,
        };
        let sub = self
            .caches
            .get(kind)
            .subscribe(filter, from, req.allow_watch_bookmarks)
            .await?;
        Ok((kind, sub))
    }
}

/// Parses a request's selectors, refusing fields the kind cannot be selected on.
pub fn parse_filter(kind: Kind, labels: &str, fields: &str) -> ApiResult<Filter> {
    let labels = LabelSelector::parse(labels).map_err(|e| ApiError::BadRequest(e.0))?;
    let fields = FieldSelector::parse(fields).map_err(|e| ApiError::BadRequest(e.0))?;
    fields
        .check_supported(supported_fields(kind))
        .map_err(|e| ApiError::BadRequest(e.0))?;
    Ok(Filter {
        namespace: String::new(),
        labels,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_namespaces_and_versions() {
        assert_eq!(kind_of("pods").unwrap(), Kind::Pod);
        assert!(
            matches!(kind_of("deployments"), Err(ApiError::BadRequest(m)) if m.contains("deployments"))
        );
        assert_eq!(namespace_for(Kind::Pod, ""), "default");
        assert_eq!(namespace_for(Kind::Node, "x"), "");
        assert_eq!(parse_rv("").unwrap(), None);
        assert_eq!(parse_rv("12").unwrap(), Some(12));
        assert!(parse_rv("abc").is_err());
        assert!(parse_rv("-1").is_err());
        let e = parse_filter(Kind::Pod, "", "spec.bogus=1").unwrap_err();
        assert_eq!(e.to_string(), "field label not supported: spec.bogus");
        assert!(parse_filter(Kind::Pod, "app in (web", "").is_err());
        assert!(parse_filter(Kind::Pod, "app", "status.phase!=Running").is_ok());
    }
}
