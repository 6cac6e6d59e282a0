//! Watch events, and the stream a watch call returns.
//!
//! A watch is one server stream: it ends when the server ends it (shutdown, the lb cutting a
//! dead backend) or with an error. An `Expired` error means the version watched from is gone:
//! relist, then watch from the list's version. Resuming after any other end is the caller's
//! job (the informers of issue 4 do it), from the last version seen.
use std::pin::Pin;

use futures::Stream;
use kl_api::{Object, Resource};
use tonic::Streaming;

use crate::error::ApiError;

/// One change of a watched object.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    /// The object as it was last (its final state).
    Deleted(K),
    /// Nothing changed up to this version: resume from here.
    Bookmark {
        resource_version: String,
    },
}

impl<K> WatchEvent<K> {
    /// The event's type as Kubernetes spells it (`ADDED`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark { .. } => "BOOKMARK",
        }
    }

    /// The object, unless this is a bookmark.
    pub fn object(&self) -> Option<&K> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            WatchEvent::Bookmark { .. } => None,
        }
    }

    pub fn map<T>(self, f: impl FnOnce(K) -> Option<T>) -> Option<WatchEvent<T>> {
        Some(match self {
            WatchEvent::Added(o) => WatchEvent::Added(f(o)?),
            WatchEvent::Modified(o) => WatchEvent::Modified(f(o)?),
            WatchEvent::Deleted(o) => WatchEvent::Deleted(f(o)?),
            WatchEvent::Bookmark { resource_version } => WatchEvent::Bookmark { resource_version },
        })
    }
}

impl<K: Resource> WatchEvent<K> {
    /// The version this event brings the watcher to (to resume from).
    pub fn resource_version(&self) -> &str {
        match self {
            WatchEvent::Bookmark { resource_version } => resource_version,
            _ => self
                .object()
                .and_then(|o| o.meta())
                .map_or("", |m| m.resource_version.as_str()),
        }
    }
}

/// The events of one watch call; ends after the first error.
pub type WatchStream<K> = Pin<Box<dyn Stream<Item = Result<WatchEvent<K>, ApiError>> + Send>>;

/// One event off the wire.
pub(crate) fn event_from_wire(ev: kl_api::WatchEvent) -> Result<WatchEvent<Object>, ApiError> {
    let object = ev.object.and_then(Object::from_typed);
    let need = |o: Option<Object>| {
        o.ok_or_else(|| {
            ApiError::unexpected(format!("{} watch event without an object", ev.r#type))
        })
    };
    Ok(match ev.r#type.as_str() {
        "ADDED" => WatchEvent::Added(need(object)?),
        "MODIFIED" => WatchEvent::Modified(need(object)?),
        "DELETED" => WatchEvent::Deleted(need(object)?),
        "BOOKMARK" => WatchEvent::Bookmark {
            resource_version: object
                .as_ref()
                .and_then(|o| o.metadata())
                .map(|m| m.resource_version.clone())
                .unwrap_or_default(),
        },
        other => {
            return Err(ApiError::unexpected(format!(
                "unknown watch event type {other:?}"
            )))
        }
    })
}

/// The stream of a tonic watch response: events until the server ends it or the first error.
pub(crate) fn stream_of(inner: Streaming<kl_api::WatchEvent>) -> WatchStream<Object> {
    Box::pin(futures::stream::unfold(Some(inner), |state| async move {
        let mut inner = state?;
        match inner.message().await {
            Ok(Some(ev)) => {
                let item = event_from_wire(ev);
                let next = item.is_ok().then_some(inner);
                Some((item, next))
            }
            Ok(None) => None,
            Err(status) => Some((Err(ApiError::from(status)), None)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use kl_api::{ObjectMeta, Pod};

    use super::*;

    fn pod(rv: &str) -> Object {
        Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                resource_version: rv.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn wire_events_become_typed_events() {
        let ev = event_from_wire(kl_api::WatchEvent {
            r#type: "MODIFIED".into(),
            object: Some(pod("7").into_typed()),
        })
        .unwrap();
        let typed = ev.map(Pod::from_object).unwrap();
        assert_eq!(typed.type_name(), "MODIFIED");
        assert_eq!(typed.resource_version(), "7");
        let bm = event_from_wire(kl_api::WatchEvent {
            r#type: "BOOKMARK".into(),
            object: Some(pod("9").into_typed()),
        })
        .unwrap();
        assert_eq!(
            bm,
            WatchEvent::Bookmark {
                resource_version: "9".into()
            }
        );
        assert!(event_from_wire(kl_api::WatchEvent {
            r#type: "ADDED".into(),
            object: None,
        })
        .is_err());
        assert!(event_from_wire(kl_api::WatchEvent {
            r#type: "ERROR".into(),
            object: Some(pod("1").into_typed()),
        })
        .is_err());
    }
}
