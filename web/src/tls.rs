//! HTTPS for the server (`--tls.cert-file`, `--tls.key-file`): every endpoint (the
//! Prometheus API, pushes, the ops API and the agents' enrollment and channel) is then
//! served over TLS on `--listen`, and plain HTTP on that port is refused by the
//! handshake.
//!
//! The certificate file holds the server's certificate first, then any intermediates
//! (PEM); the key file one PKCS#8, PKCS#1 or SEC1 private key (PEM). Both are read
//! again on SIGHUP and `POST /-/reload` ([`Tls::reload`]): a renewed certificate is
//! used by new connections, and a bad pair is refused with the running one kept.
//!
//! The `ring` provider is named explicitly rather than installed process-wide, so the
//! configuration does not depend on which provider other crates enable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::AppState;

/// The server's certificate and key files, and the configuration made from them.
#[derive(Clone)]
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    config: RustlsConfig,
}

/// Reads and checks a certificate chain and its key.
fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("--tls.cert-file {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls.cert-file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls.cert-file {}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("--tls.key-file {}: no private key: {e}", key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        format!(
            "--tls.cert-file {} with --tls.key-file {}: {e}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Tls {
    /// Reads the certificate and key; the error names the file and what is wrong.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Tls, String> {
        let config = RustlsConfig::from_config(server_config(cert_file, key_file)?);
        Ok(Tls {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            config,
        })
    }

    /// Reads the files again; new connections use the new pair. On error the running
    /// pair stays.
    pub fn reload(&self) -> Result<(), String> {
        let c = server_config(&self.cert_file, &self.key_file)?;
        self.config.reload_from_config(c);
        Ok(())
    }
}

/// Serves `router(state)` over TLS on `listener` until `shutdown` completes; then
/// stops accepting and gives open connections a few seconds to finish.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tls: Tls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::router(state);
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, tls.config)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = Tls::load(&cert, &key).err().unwrap();
        assert!(
            e.contains("--tls.cert-file") && e.contains("cert.pem"),
            "{e}"
        );
        std::fs::write(&cert, "junk\n").unwrap();
        let e = Tls::load(&cert, &key).err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
    }
}
