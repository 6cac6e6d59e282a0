//! Subject alternative names: what a serving certificate is valid for.
//!
//! A TLS client checks the name it dialled (`https://etcd1:2379`, `https://127.0.0.1:2379`)
//! against these, so every name or address a client may use must be listed. Names are checked
//! here, when the PKI is generated, because a typo found at handshake time is much harder to
//! trace back to the command that caused it.

use std::{fmt, net::IpAddr};

use crate::PkiError;

/// Names every serving certificate carries, whatever the caller gives: a member is always
/// reachable over loopback from its own host (health checks, `etcdctl` on the node). `::1` is
/// there for the same reason on IPv6 loopback, as in kubeadm's etcd certificates.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// One subject alternative name: a DNS name or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum San {
    /// A host name such as `etcd1`, `lb` or `*.etcd.svc` (one leading wildcard label allowed).
    Dns(String),
    /// An IP address, written in the certificate as an IP SAN (clients dialling an address
    /// match IP SANs only, never a DNS SAN that happens to spell the address).
    Ip(IpAddr),
}

impl San {
    /// Parses a name the way users write it: anything that parses as an IPv4 or IPv6 address is
    /// an IP SAN, anything else must be a valid DNS name.
    pub fn parse(text: &str) -> Result<San, PkiError> {
        let s = text.trim();
        let invalid = |reason: &'static str| PkiError::InvalidSan {
            san: text.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("empty name"));
        }
        // `[::1]` is how addresses appear in URLs; accept it so that a pasted host works.
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        if s.len() > 253 {
            return Err(invalid("a DNS name is at most 253 characters"));
        }
        if s.contains(':') || s.contains('/') {
            return Err(invalid(
                "give a host name or an IP address, not a URL or host:port",
            ));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        let labels = match name.strip_prefix("*.") {
            Some(rest) => rest,
            None => name,
        };
        for label in labels.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label (two dots in a row, or a leading dot)"));
            }
            if label.len() > 63 {
                return Err(invalid("a DNS label is at most 63 characters"));
            }
            // Underscores are not valid host names, but Docker generates container names with
            // them and rustls accepts them, so refusing them would only get in the way.
            if !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    "a DNS name may only contain letters, digits, '-', '_' and '.' \
                     (and one leading '*.')",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a DNS label may not start or end with '-'"));
            }
        }
        Ok(San::Dns(name.to_ascii_lowercase()))
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, PkiError> {
        Ok(match self {
            San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            San::Dns(name) => rcgen::SanType::DnsName(name.clone().try_into().map_err(|_| {
                PkiError::InvalidSan {
                    san: name.clone(),
                    reason: "not representable as an ASCII (IA5) string",
                }
            })?),
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Parses `extra` after [`DEFAULT_SANS`], dropping duplicates but keeping first-seen order (so
/// the certificate lists names in the order the operator typed them).
pub fn serving_sans<S: AsRef<str>>(extra: &[S]) -> Result<Vec<San>, PkiError> {
    let mut out: Vec<San> = Vec::new();
    for text in DEFAULT_SANS
        .iter()
        .copied()
        .chain(extra.iter().map(|s| s.as_ref()))
    {
        let san = San::parse(text)?;
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        assert_eq!(San::parse("etcd1").ok(), Some(San::Dns("etcd1".into())));
        assert_eq!(
            San::parse("LB.Example.com.").ok(),
            Some(San::Dns("lb.example.com".into()))
        );
        assert_eq!(
            San::parse("*.etcd.svc").ok(),
            Some(San::Dns("*.etcd.svc".into()))
        );
        assert_eq!(
            San::parse("kube-lite_etcd1_1").ok(),
            Some(San::Dns("kube-lite_etcd1_1".into()))
        );
        assert_eq!(
            San::parse("10.0.0.1").ok(),
            Some(San::Ip("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            San::parse("[::1]").ok(),
            Some(San::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            San::parse("fd00::2").ok(),
            Some(San::Ip("fd00::2".parse().unwrap()))
        );
    }

    #[test]
    fn refuses_what_cannot_be_a_name() {
        for bad in [
            "",
            "  ",
            "a..b",
            ".a",
            "-a",
            "a-",
            "a b",
            "https://etcd1:2379",
            "etcd1:2379",
            "a.*.b",
            "é.com",
        ] {
            assert!(San::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long_label = "a".repeat(64);
        assert!(San::parse(&long_label).is_err());
    }

    #[test]
    fn defaults_first_and_no_duplicates() {
        let sans = serving_sans(&["etcd1", "127.0.0.1", "ETCD1", "10.0.0.1"]).unwrap();
        let shown: Vec<String> = sans.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["localhost", "127.0.0.1", "::1", "etcd1", "10.0.0.1"]
        );
    }
}
