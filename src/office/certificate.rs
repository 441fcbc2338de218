//! The office server's TLS identity: the certificate chain and key that
//! office.toml names, or a self-signed certificate the server makes at its
//! first start, keeps beside its database and reuses at every later start.
//! Either way its SHA-256 fingerprint is what staff compare when a browser
//! or a screen's installer first meets it.
//!
//! This module reads and writes files and builds rustls' server
//! configuration; it accepts no connection (`office::http` does).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::{ServerConfig, Transport};

/// How long a self-signed certificate is valid: long, since nobody renews
/// it; an office that wants rotation names its own in office.toml.
const SELF_SIGNED_DAYS: i64 = 3650;

/// The server's certificate and key, loaded.
pub struct Identity {
    /// The PEM file of the certificate (the chain, leaf first).
    pub cert_file: PathBuf,
    /// Whether the server made this certificate at this start.
    pub made_now: bool,
    /// The leaf certificate's SHA-256, as `AB:CD:…` (what
    /// `openssl x509 -fingerprint -sha256` prints).
    pub fingerprint: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The identity office.toml asks for: its own files, or the
    /// self-signed pair beside the database (made when missing). `None`
    /// for plain HTTP.
    pub fn for_config(config: &ServerConfig) -> anyhow::Result<Option<Identity>> {
        match &config.transport {
            Transport::Plain => Ok(None),
            Transport::Tls { cert, key } => Identity::load(cert, key, false).map(Some),
            Transport::SelfSigned => {
                let (cert, key) = config.self_signed_paths();
                let made_now = match (cert.exists(), key.exists()) {
                    (true, true) => false,
                    (false, false) => {
                        make_self_signed(config, &cert, &key)?;
                        true
                    }
                    // Half a pair is a folder someone edited: making a new
                    // certificate would silently change the fingerprint
                    // that screens and browsers were told to trust.
                    (true, false) => bail!(
                        "{} exists but its key {} does not: restore the key, or remove the \
                         certificate to make a new pair (screens trusting the old one must then \
                         be given the new one)",
                        cert.display(),
                        key.display()
                    ),
                    (false, true) => bail!(
                        "{} exists but its certificate {} does not: restore it, or remove the \
                         key to make a new pair",
                        key.display(),
                        cert.display()
                    ),
                };
                Identity::load(&cert, &key, made_now).map(Some)
            }
        }
    }

    fn load(cert_file: &Path, key_file: &Path, made_now: bool) -> anyhow::Result<Identity> {
        let chain = CertificateDer::pem_file_iter(cert_file)
            .with_context(|| format!("reading the TLS certificate {}", cert_file.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing the TLS certificate {}", cert_file.display()))?;
        let Some(leaf) = chain.first() else {
            bail!(
                "the TLS certificate file {} holds no certificate",
                cert_file.display()
            );
        };
        let key = PrivateKeyDer::from_pem_file(key_file)
            .with_context(|| format!("reading the TLS key {}", key_file.display()))?;
        Ok(Identity {
            cert_file: cert_file.to_owned(),
            made_now,
            fingerprint: fingerprint(leaf),
            chain,
            key,
        })
    }

    /// rustls' server configuration: HTTP/1.1 only, as the server speaks.
    /// A key that does not match the certificate is refused here, at start.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        crate::tls::install_crypto_provider();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .with_context(|| {
                format!(
                    "the TLS key does not fit the certificate {}",
                    self.cert_file.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// `AB:CD:…`: the SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cert);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The names a self-signed certificate is made for: localhost and the
/// loopback addresses, the address listened on when it is a specific one,
/// and the host of `public_url`.
fn names(config: &ServerConfig) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let listen = config.listen.ip();
    if !listen.is_unspecified() {
        names.push(listen.to_string());
    }
    if let Some(host) = config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // An IP address is written the way rcgen recognises it.
        names.push(match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_owned(),
        });
    }
    let mut unique = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// Makes the self-signed pair: the key first (mode 0600), then the
/// certificate, each written whole or not at all.
fn make_self_signed(
    config: &ServerConfig,
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<()> {
    let names = names(config);
    let mut params = rcgen::CertificateParams::new(names.clone())
        .context("making the self-signed certificate's names")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gongkai office");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let key = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the self-signed certificate")?;
    write_private(key_file, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing the TLS key {}", key_file.display()))?;
    crate::files::write_new_atomically(cert_file, cert.pem().as_bytes())
        .with_context(|| format!("writing the TLS certificate {}", cert_file.display()))?;
    tracing::info!(
        "made a self-signed TLS certificate {} for {}",
        cert_file.display(),
        names.join(", ")
    );
    Ok(())
}

/// Writes a new file readable by its owner only, whole or not at all.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates its files with mode 0600.
    let mut temporary = tempfile::NamedTempFile::new_in(dir)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    temporary.persist_noclobber(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> ServerConfig {
        ServerConfig::parse(&format!(
            "listen = \"0.0.0.0:8443\"\ndatabase = \"{}\"\n{extra}",
            dir.join("office.db").display()
        ))
        .unwrap()
    }

    #[test]
    fn the_self_signed_certificate_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "public_url = \"https://office.example\"\n");
        let first = Identity::for_config(&c).unwrap().unwrap();
        assert!(first.made_now);
        first.server_config().unwrap();
        let second = Identity::for_config(&c).unwrap().unwrap();
        assert!(!second.made_now);
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(c.self_signed_paths().1)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is the owner's alone: {mode:o}");
        assert!(names(&c).contains(&"office.example".to_owned()));
    }

    #[test]
    fn half_a_pair_is_refused_rather_than_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        Identity::for_config(&c).unwrap();
        std::fs::remove_file(c.self_signed_paths().1).unwrap();
        let e = Identity::for_config(&c).err().unwrap().to_string();
        assert!(e.contains("does not"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let a = config(&dir.path().join("a"), "");
        let b = config(&dir.path().join("b"), "");
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        Identity::for_config(&a).unwrap();
        Identity::for_config(&b).unwrap();
        let mixed = config(
            dir.path(),
            &format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                a.self_signed_paths().0.display(),
                b.self_signed_paths().1.display()
            ),
        );
        let identity = Identity::for_config(&mixed).unwrap().unwrap();
        assert!(identity.server_config().is_err());
        let e = Identity::load(&dir.path().join("none.pem"), &dir.path().join("k"), false)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("none.pem"), "{e:#}");
    }
}
