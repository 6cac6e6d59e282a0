//! kube-lite's API types and what every component needs to handle them.
//!
//! Layout:
//! * the generated types from `proto/kubelite/v1` (package `kubelite.v1`), re-exported here,
//!   with serde in Kubernetes' camelCase field names (empty fields are omitted on output);
//! * [`object`]: the [`Kind`] and [`Object`] enums (apiVersion, kind, resource names, scope),
//!   conversions to and from the API's `TypedObject` and stored JSON, and the [`Resource`] trait
//!   implemented by each kind's type;
//! * the gRPC service `kubelite.v1.Api` (`api_client`, `api_server`) from `api.proto`;
//! * [`manifest`]: multi-document YAML/JSON manifests → [`Object`]s, strictly (unknown fields
//!   are errors);
//! * [`defaults`]: Kubernetes defaulting; [`validation`]: Kubernetes validation with
//!   Kubernetes-style messages; [`quantity`]: cpu/memory quantities.
//! * [`selector`]: label and field selectors in Kubernetes' text syntax (`app in (a,b),!x`,
//!   `spec.nodeName=n1`), parsed and matched.
//!
//! This crate owns the shape of objects; it never does I/O.
#![forbid(unsafe_code)]

pub mod defaults;
pub mod manifest;
pub mod object;
pub mod quantity;
pub mod selector;
pub mod validation;

#[allow(clippy::all)]
#[rustfmt::skip]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/kubelite.v1.rs"));
}
pub use pb::*;

pub use defaults::set_defaults;
pub use manifest::{parse_manifests, ManifestError};
pub use object::{Kind, Object, Resource};
pub use quantity::{Quantity, QuantityError};
pub use selector::{FieldSelector, SelectorError};
pub use validation::{validate, validate_update, FieldError, FieldErrors};

/// Used by the generated serde code: omit fields that hold their default value, as kubectl does.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
