//! The options of list, watch and delete calls, as Kubernetes' `ListOptions` and
//! `DeleteOptions`. Builder-style:
//!
//! ```
//! let lp = kl_client::ListParams::default().labels("app=web").limit(100);
//! assert_eq!(lp.label_selector, "app=web");
//! let dp = kl_client::DeleteParams::default().grace_period(0);
//! assert_eq!(dp.grace_period_seconds, Some(0));
//! ```

/// What to list: selectors and paging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Kubernetes syntax, set-based included: `app=web,tier!=db,env in (a,b),!legacy`.
    pub label_selector: String,
    /// `metadata.name=x`, `spec.nodeName=n`, `status.phase!=Running`.
    pub field_selector: String,
    /// At most this many items per page (0: all at once).
    pub limit: i64,
    /// The token of the previous page.
    pub continue_token: String,
}

impl ListParams {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = selector.to_string();
        self
    }

    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = selector.to_string();
        self
    }

    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    pub fn continue_token(mut self, token: &str) -> Self {
        self.continue_token = token.to_string();
        self
    }
}

/// What to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Ask for BOOKMARK events while nothing else happens, so that a resumed watch starts from
    /// a recent version.
    pub bookmarks: bool,
}

impl WatchParams {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = selector.to_string();
        self
    }

    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = selector.to_string();
        self
    }

    pub fn bookmarks(mut self, on: bool) -> Self {
        self.bookmarks = on;
        self
    }
}

impl From<&ListParams> for WatchParams {
    fn from(lp: &ListParams) -> Self {
        WatchParams {
            label_selector: lp.label_selector.clone(),
            field_selector: lp.field_selector.clone(),
            bookmarks: false,
        }
    }
}

/// How to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    /// Pods only: None = the pod's terminationGracePeriodSeconds; 0 = remove now.
    pub grace_period_seconds: Option<i64>,
    /// Delete only if the object still has this uid / resourceVersion (else Conflict).
    pub preconditions: Option<kl_api::Preconditions>,
    /// `Background` (None: the default) or `Orphan` (kubectl's `--cascade=orphan`): whether the
    /// garbage collector deletes the object's dependents or leaves them, without owner.
    pub propagation_policy: Option<String>,
}

impl DeleteParams {
    pub fn grace_period(mut self, seconds: i64) -> Self {
        self.grace_period_seconds = Some(seconds);
        self
    }

    /// Leaves the object's dependents in place (kubectl's `--cascade=orphan`).
    pub fn orphan(mut self) -> Self {
        self.propagation_policy = Some("Orphan".to_string());
        self
    }

    pub fn precondition_uid(mut self, uid: &str) -> Self {
        self.preconditions.get_or_insert_with(Default::default).uid = uid.to_string();
        self
    }

    pub fn precondition_resource_version(mut self, rv: &str) -> Self {
        self.preconditions
            .get_or_insert_with(Default::default)
            .resource_version = rv.to_string();
        self
    }
}
