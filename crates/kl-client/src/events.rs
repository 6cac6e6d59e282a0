//! Recording Events, as client-go's `EventRecorder`: best effort, bounded, never in the way.
//!
//! An Event names the object it is about (`involvedObject`), a reason (`Started`,
//! `FailedScheduling`, ...), a message and the component that saw it; `kubectl-lite describe`
//! shows them under the object. A failure to record one is logged at debug level and
//! otherwise ignored: events are for people, not for correctness.
//!
//! ```
//! let r = kl_api::ObjectReference { kind: "Pod".into(), name: "web".into(), ..Default::default() };
//! let e = kl_client::events::event(&r, "default-scheduler", "", "Normal", "Scheduled", "ok",
//!     std::time::SystemTime::UNIX_EPOCH);
//! assert_eq!(e.first_timestamp, "1970-01-01T00:00:00Z");
//! assert!(e.metadata.unwrap().name.starts_with("web."));
//! ```
use std::time::{Duration, SystemTime};

use kl_api::{Event, EventSource, FencingToken, ObjectMeta, ObjectReference, Resource};
use tracing::debug;

use crate::{Api, Client};

/// How long one event write may take before it is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The reference an Event keeps to `obj`.
pub fn reference_to<K: Resource>(obj: &K) -> ObjectReference {
    let meta = obj.meta().cloned().unwrap_or_default();
    ObjectReference {
        kind: K::KIND.as_str().into(),
        namespace: meta.namespace,
        name: meta.name,
        uid: meta.uid,
        api_version: K::KIND.api_version().into(),
        resource_version: meta.resource_version,
        field_path: String::new(),
    }
}

/// Kubernetes' Time text (`2006-01-02T15:04:05Z`), UTC.
pub fn seconds_time(t: SystemTime) -> String {
    let micro = crate::leader_election::micro_time(t);
    format!("{}Z", &micro[..19])
}

/// The Event itself, named `<object>.<unix nanos in hex>` as upstream names them.
pub fn event(
    about: &ObjectReference,
    component: &str,
    host: &str,
    type_: &str,
    reason: &str,
    message: &str,
    now: SystemTime,
) -> Event {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let ts = seconds_time(now);
    Event {
        metadata: Some(ObjectMeta {
            name: format!("{}.{nanos:x}", about.name),
            namespace: if about.namespace.is_empty() {
                "default".into()
            } else {
                about.namespace.clone()
            },
            ..Default::default()
        }),
        involved_object: Some(about.clone()),
        reason: reason.into(),
        message: message.into(),
        r#type: type_.into(),
        count: 1,
        first_timestamp: ts.clone(),
        last_timestamp: ts,
        source: Some(EventSource {
            component: component.into(),
            host: host.into(),
        }),
        ..Default::default()
    }
}

/// Writes Events as one component (`source.component`) on one host.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: String,
    fencing: Option<FencingToken>,
}

impl Recorder {
    pub fn new(client: Client, component: &str, host: &str) -> Recorder {
        Recorder {
            client,
            component: component.into(),
            host: host.into(),
            fencing: None,
        }
    }

    /// Events written by a leader carry its fencing token, like its other writes.
    pub fn with_fencing(mut self, token: Option<FencingToken>) -> Recorder {
        self.fencing = token;
        self
    }

    /// Records an Event about `about` (best effort, bounded).
    pub async fn record(&self, about: &ObjectReference, type_: &str, reason: &str, message: &str) {
        let ev = event(
            about,
            &self.component,
            &self.host,
            type_,
            reason,
            message,
            SystemTime::now(),
        );
        let ns = ev
            .metadata
            .as_ref()
            .map(|m| m.namespace.clone())
            .unwrap_or_default();
        let mut api = Api::<Event>::namespaced(self.client.clone(), &ns);
        if let Some(t) = &self.fencing {
            api = api.with_fencing(t.clone());
        }
        match tokio::time::timeout(WRITE_TIMEOUT, api.create(ev)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => debug!(object = %about.name, reason, error = %e, "event not recorded"),
            Err(_) => debug!(object = %about.name, reason, "recording an event timed out"),
        }
    }

    /// [`Recorder::record`] about an object.
    pub async fn record_for<K: Resource>(&self, obj: &K, type_: &str, reason: &str, message: &str) {
        self.record(&reference_to(obj), type_, reason, message)
            .await;
    }
}
