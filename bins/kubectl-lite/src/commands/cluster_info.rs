//! `kubectl-lite cluster-info`: where the control plane is, then what kube-lite adds: each
//! apiserver behind the lb (from its identity Lease), each etcd member with its health and
//! role as an apiserver sees it (the ClusterInfo RPC), and who holds each component's
//! leader-election Lease.
use std::io::Write;

use clap::Args;
use kl_api::{ClusterInfoResponse, Kind, Lease, Object};
use kl_client::ListParams;
use time::OffsetDateTime;

use super::session::{Globals, Session};
use super::tabwriter::TabWriter;
use super::timefmt::{human_duration_signed, parse_timestamp};

#[derive(Debug, Args)]
pub struct ClusterInfoArgs {}

/// The label every apiserver's identity Lease carries (as kube-apiserver's).
pub const APISERVER_IDENTITY_LABEL: (&str, &str) =
    ("apiserver.kubernetes.io/identity", "kube-apiserver");

/// The leader-election Leases of the control-plane components, in kube-system.
pub const COMPONENT_LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

pub async fn run(g: &Globals, _args: ClusterInfoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let s = Session::connect(g)?;
    // Every Lease of kube-system, filtered here: one read serves both sections.
    let leases: Vec<Lease> = s
        .api_in(Kind::Lease, "kube-system")
        .list_all(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| match o {
            Object::Lease(l) => Some(l),
            _ => None,
        })
        .collect();
    let info = s.client.cluster_info().await?;
    let text = render(s.client.server(), &leases, &info, OffsetDateTime::now_utc());
    out.write_all(text.as_bytes())?;
    Ok(())
}

fn lease_name(l: &Lease) -> &str {
    l.metadata.as_ref().map_or("", |m| m.name.as_str())
}

/// `fresh` when renewed within its duration, else `expired`; and how long ago it was renewed.
fn lease_state(l: &Lease, now: OffsetDateTime) -> (String, String) {
    let spec = l.spec.clone().unwrap_or_default();
    let Some(renewed) = parse_timestamp(&spec.renew_time) else {
        return ("never renewed".to_string(), "-".to_string());
    };
    let since = (now - renewed).whole_seconds();
    let ago = format!("{} ago", human_duration_signed(since));
    let fresh = spec
        .lease_duration_seconds
        .is_some_and(|d| since <= i64::from(d));
    (if fresh { "fresh" } else { "expired" }.to_string(), ago)
}

/// The whole report (pure, for tests).
pub fn render(
    server: &str,
    leases: &[Lease],
    info: &ClusterInfoResponse,
    now: OffsetDateTime,
) -> String {
    let mut out = format!("Kubernetes control plane is running at {server}\n\n");

    let (k, v) = APISERVER_IDENTITY_LABEL;
    let apiservers: Vec<&Lease> = leases
        .iter()
        .filter(|l| {
            l.metadata
                .as_ref()
                .is_some_and(|m| m.labels.get(k).map(String::as_str) == Some(v))
        })
        .collect();
    out.push_str(&format!(
        "API servers (Leases in kube-system labelled {k}={v}):\n"
    ));
    let mut tw = TabWriter::table();
    if apiservers.is_empty() {
        out.push_str("  <none>\n");
    } else {
        tw.row(&["  LEASE", "ADDRESS", "STATE", "RENEWED"]);
        for l in apiservers {
            let (state, ago) = lease_state(l, now);
            let holder = l.spec.as_ref().map_or("", |s| s.holder_identity.as_str());
            tw.row(&[
                format!("  {}", lease_name(l)),
                if holder.is_empty() {
                    "<none>".into()
                } else {
                    holder.to_string()
                },
                state,
                ago,
            ]);
        }
        out.push_str(&tw.flush());
    }

    out.push_str(&format!(
        "\netcd members (as seen by the apiserver at {}; key prefix {}):\n",
        if info.server.is_empty() {
            "<unknown>"
        } else {
            &info.server
        },
        if info.etcd_prefix.is_empty() {
            "/registry"
        } else {
            &info.etcd_prefix
        },
    ));
    if info.etcd_members.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut tw = TabWriter::table();
        tw.row(&[
            "  NAME",
            "ENDPOINT",
            "HEALTH",
            "ROLE",
            "RAFT TERM",
            "VERSION",
            "ERROR",
        ]);
        for m in &info.etcd_members {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            tw.row(&[
                format!("  {}", dash(&m.name)),
                dash(&m.client_urls.join(",")),
                if m.healthy { "healthy" } else { "unhealthy" }.to_string(),
                if !m.healthy {
                    "-"
                } else if m.is_leader {
                    "leader"
                } else {
                    "follower"
                }
                .to_string(),
                if m.raft_term > 0 {
                    m.raft_term.to_string()
                } else {
                    "-".to_string()
                },
                dash(&m.version),
                dash(&m.error),
            ]);
        }
        out.push_str(&tw.flush());
    }

    out.push_str("\nLeader election (Leases in kube-system):\n");
    let mut tw = TabWriter::table();
    tw.row(&["  COMPONENT", "HOLDER", "STATE", "RENEWED", "TRANSITIONS"]);
    for name in COMPONENT_LEASES {
        let row = match leases.iter().find(|l| lease_name(l) == name) {
            Some(l) => {
                let spec = l.spec.clone().unwrap_or_default();
                let (state, ago) = lease_state(l, now);
                let holder = if spec.holder_identity.is_empty() {
                    "<none>".to_string()
                } else {
                    spec.holder_identity.clone()
                };
                [
                    format!("  {name}"),
                    holder,
                    state,
                    ago,
                    spec.lease_transitions.unwrap_or(0).to_string(),
                ]
            }
            None => [
                format!("  {name}"),
                "<none>".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            ],
        };
        tw.row(&row);
    }
    out.push_str(&tw.flush());
    out
}

#[cfg(test)]
mod tests {
    use kl_api::*;

    use super::*;

    fn lease(name: &str, holder: &str, renew: &str, labels: &[(&str, &str)]) -> Lease {
        Lease {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "kube-system".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: holder.into(),
                lease_duration_seconds: Some(15),
                renew_time: renew.into(),
                lease_transitions: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cluster_info_lists_apiservers_members_and_leaders() {
        let now = crate::commands::timefmt::parse_timestamp("2024-05-01T12:00:00Z").unwrap();
        let id = [APISERVER_IDENTITY_LABEL];
        let leases = vec![
            lease("apiserver-a", "127.0.0.1:6441", "2024-05-01T11:59:58Z", &id),
            lease("apiserver-b", "127.0.0.1:6442", "2024-05-01T11:50:00Z", &id),
            lease("kube-scheduler", "master-1_x", "2024-05-01T11:59:59Z", &[]),
        ];
        let info = ClusterInfoResponse {
            server: "127.0.0.1:6441".into(),
            etcd_prefix: "/registry".into(),
            etcd_members: vec![
                EtcdMemberInfo {
                    name: "etcd0".into(),
                    client_urls: vec!["https://127.0.0.1:2379".into()],
                    healthy: true,
                    is_leader: true,
                    raft_term: 3,
                    version: "3.5.0".into(),
                    ..Default::default()
                },
                EtcdMemberInfo {
                    name: "etcd1".into(),
                    client_urls: vec!["https://127.0.0.1:2479".into()],
                    healthy: false,
                    error: "connection refused".into(),
                    ..Default::default()
                },
            ],
        };
        let text = render("https://127.0.0.1:6443", &leases, &info, now);
        assert_eq!(
            text,
            "Kubernetes control plane is running at https://127.0.0.1:6443

API servers (Leases in kube-system labelled apiserver.kubernetes.io/identity=kube-apiserver):
  LEASE         ADDRESS          STATE     RENEWED
  apiserver-a   127.0.0.1:6441   fresh     2s ago
  apiserver-b   127.0.0.1:6442   expired   10m ago

etcd members (as seen by the apiserver at 127.0.0.1:6441; key prefix /registry):
  NAME    ENDPOINT                 HEALTH      ROLE     RAFT TERM   VERSION   ERROR
  etcd0   https://127.0.0.1:2379   healthy     leader   3           3.5.0     -
  etcd1   https://127.0.0.1:2479   unhealthy   -        -           -         connection refused

Leader election (Leases in kube-system):
  COMPONENT                 HOLDER       STATE   RENEWED   TRANSITIONS
  kube-controller-manager   <none>       -       -         -
  kube-scheduler            master-1_x   fresh   1s ago    2
"
        );
    }
}
