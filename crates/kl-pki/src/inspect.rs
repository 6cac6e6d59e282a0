//! Reading a certificate back: what it says (subject, SANs, usages, expiry) and whether a CA
//! signed it. Used by tests, and by anyone who wants to check a generated file or kubeconfig
//! without a TLS handshake.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, pem::Pem};

use crate::{PkiError, San};

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject CN: the user name, for a client certificate.
    pub common_name: String,
    /// Subject O values: the user's groups.
    pub organizations: Vec<String>,
    /// DNS and IP subject alternative names, in certificate order.
    pub sans: Vec<San>,
    /// basicConstraints CA.
    pub is_ca: bool,
    /// extendedKeyUsage serverAuth.
    pub server_auth: bool,
    /// extendedKeyUsage clientAuth.
    pub client_auth: bool,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

fn bad(what: &str, reason: impl std::fmt::Display) -> PkiError {
    PkiError::BadCert {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_pem(what: &str, pem: &[u8]) -> Result<Pem, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| bad(what, format!("not a PEM certificate: {e}")))?;
    Ok(pem)
}

fn parse_x509<'a>(what: &str, pem: &'a Pem) -> Result<X509Certificate<'a>, PkiError> {
    pem.parse_x509()
        .map_err(|e| bad(what, format!("not an X.509 certificate: {e}")))
}

/// Parses the first certificate of `cert_pem`.
pub fn inspect(cert_pem: &[u8]) -> Result<CertSummary, PkiError> {
    let what = "certificate";
    let pem = parse_pem(what, cert_pem)?;
    let x = parse_x509(what, &pem)?;
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let common_name = strings(&mut x.subject().iter_common_name())
        .into_iter()
        .next()
        .unwrap_or_default();
    let organizations = strings(&mut x.subject().iter_organization());
    let sans = x
        .subject_alternative_name()
        .map_err(|e| bad(what, format!("unreadable subjectAltName: {e}")))?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(San::Dns(d.to_string())),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| San::Ip(IpAddr::from(a))),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| San::Ip(IpAddr::from(a))),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let eku = x
        .extended_key_usage()
        .map_err(|e| bad(what, format!("unreadable extendedKeyUsage: {e}")))?
        .map(|e| (e.value.server_auth, e.value.client_auth))
        .unwrap_or((false, false));
    let time = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|e| bad(what, format!("unreadable validity: {e}")))
    };
    Ok(CertSummary {
        common_name,
        organizations,
        sans,
        is_ca: x.is_ca(),
        server_auth: eku.0,
        client_auth: eku.1,
        not_before: time(x.validity().not_before)?,
        not_after: time(x.validity().not_after)?,
    })
}

/// Checks that `cert_pem` was issued by the CA `ca_pem`: the issuer name matches the CA's
/// subject and the signature verifies with the CA's public key.
pub fn verify_issued_by(cert_pem: &[u8], ca_pem: &[u8]) -> Result<(), PkiError> {
    let cert_pem = parse_pem("certificate", cert_pem)?;
    let cert = parse_x509("certificate", &cert_pem)?;
    let ca_pem = parse_pem("CA certificate", ca_pem)?;
    let ca = parse_x509("CA certificate", &ca_pem)?;
    if cert.issuer() != ca.subject() {
        return Err(bad(
            "certificate",
            format!(
                "issued by {:?}, not by {:?}",
                cert.issuer().to_string(),
                ca.subject().to_string()
            ),
        ));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| bad("certificate", format!("not signed by this CA's key: {e}")))
}
