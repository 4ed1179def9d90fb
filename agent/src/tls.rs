//! The TLS client configuration shared by everything that talks to a Minos server over
//! `https://` (the agent's enrollment, metric pushes and channel, and the `minos`
//! client commands): the public web PKI roots, plus the certificates of a private CA
//! (`--tls.ca-file`, PEM) for servers whose certificate a company's own CA signed.
//!
//! The `ring` provider is named explicitly rather than installed process-wide, so the
//! configuration does not depend on which provider other crates enable.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// An error with its causes (`error sending request: ...: invalid peer certificate:
/// UnknownIssuer`): HTTP clients put the reason a TLS handshake failed in the causes.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

/// Reads the PEM certificates of `path`: at least one, every one valid.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The client configuration: web PKI roots, and the certificates of `ca_file` if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            client_config(Some(&missing))
                .unwrap_err()
                .contains("missing.pem")
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
        assert!(client_config(None).is_ok());
    }
}
