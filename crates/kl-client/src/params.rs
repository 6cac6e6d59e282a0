//! The options of list, watch, delete and log calls, as Kubernetes' `ListOptions`,
//! `DeleteOptions` and `PodLogOptions`. Builder-style:
//!
//! ```
//! let lp = kl_client::ListParams::default().labels("app=web").limit(100);
//! assert_eq!(lp.label_selector, "app=web");
//! let dp = kl_client::DeleteParams::default().grace_period(0);
//! assert_eq!(dp.grace_period_seconds, Some(0));
//! let logs = kl_client::LogParams::default().container("web").follow(true).tail_lines(10);
//! assert_eq!((logs.container.as_str(), logs.follow, logs.tail_lines), ("web", true, Some(10)));
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

/// What to read of a container's log (Kubernetes' `PodLogOptions`, kubectl logs' flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogParams {
    /// The container; "" for a pod that has exactly one.
    pub container: String,
    /// Keep streaming new output until the container exits (`-f`).
    pub follow: bool,
    /// Only the last this many lines (`--tail`).
    pub tail_lines: Option<i64>,
    /// The previous, terminated instance of the container (`-p`).
    pub previous: bool,
    /// Each line prefixed with its RFC 3339 timestamp (`--timestamps`).
    pub timestamps: bool,
    /// At most this many bytes (`--limit-bytes`).
    pub limit_bytes: Option<i64>,
}

impl LogParams {
    pub fn container(mut self, name: &str) -> Self {
        self.container = name.to_string();
        self
    }

    pub fn follow(mut self, on: bool) -> Self {
        self.follow = on;
        self
    }

    pub fn tail_lines(mut self, lines: i64) -> Self {
        self.tail_lines = Some(lines);
        self
    }

    pub fn previous(mut self, on: bool) -> Self {
        self.previous = on;
        self
    }

    pub fn timestamps(mut self, on: bool) -> Self {
        self.timestamps = on;
        self
    }

    pub fn limit_bytes(mut self, bytes: i64) -> Self {
        self.limit_bytes = Some(bytes);
        self
    }
}
