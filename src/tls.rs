//! TLS for every client the programs make (MQTT through the relay, the
//! office's HTTP API, media downloads): one crypto provider, chosen once, and
//! one way to build a client configuration from a CA file.

use std::path::Path;

use anyhow::{Context, bail};

/// Installs the process-wide rustls crypto provider. Call once at start-up:
/// with more than one provider linked, rustls panics at the first connection
/// unless one is chosen.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS client configuration that trusts `ca_file` (PEM), or the system's
/// CA bundle when there is none.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading CA file {}", path.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("parsing CA file {}", path.display()))?)
                    .context("adding CA certificate")?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        bail!(
            "no CA certificates: install the system's CA bundle or name a CA file in the configuration"
        );
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
