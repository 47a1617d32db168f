//! The kubelet's serving certificate and the TLS settings of port 10250.
//!
//! As upstream (cmd/kubelet/app/server.go `InitializeTLS`): `--tls-cert-file` and
//! `--tls-private-key-file` when both are given, otherwise `kubelet.crt`/`kubelet.key` in the
//! certificate directory, created self-signed on first start for the node name and node IPs
//! and reused afterwards. With a client CA file (`authentication.x509.clientCAFile`) every client
//! must present a certificate it signed.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{ServerConfig, ServerError};

/// Validity of a generated serving certificate, in days (upstream: one year).
const SELF_SIGNED_VALIDITY_DAYS: i64 = 365;

/// A certificate chain and its private key, DER.
pub(crate) struct ServingCert {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// The paths of the serving certificate and key this configuration uses.
pub fn serving_cert_paths(config: &ServerConfig) -> (PathBuf, PathBuf) {
    match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (
            config.cert_dir.join("kubelet.crt"),
            config.cert_dir.join("kubelet.key"),
        ),
    }
}

/// Loads the configured certificate, creating the self-signed one when none exists yet.
pub(crate) fn load_or_create(config: &ServerConfig) -> Result<ServingCert, ServerError> {
    let explicit = config.tls_cert_file.is_some() && config.tls_private_key_file.is_some();
    let (cert_path, key_path) = serving_cert_paths(config);
    let present = cert_path.exists() && key_path.exists();
    if !explicit && !present {
        let (cert_pem, key_pem) = self_signed(&config.node_name, &config.node_ips)?;
        create_dir(&config.cert_dir)?;
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "created self-signed serving certificate");
    }
    let chain = read_certs(&cert_path)?;
    let key_pem = read(&key_path)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| cert_err(&key_path, e.to_string()))?
        .ok_or_else(|| cert_err(&key_path, "no private key in PEM".into()))?;
    Ok(ServingCert { chain, key })
}

/// A self-signed certificate for `node_name` and `ips` (PEM certificate, PEM PKCS#8 key).
pub fn self_signed(node_name: &str, ips: &[IpAddr]) -> Result<(String, String), ServerError> {
    let key = KeyPair::generate().map_err(ServerError::Generate)?;
    let mut params = CertificateParams::default();
    let now = jiff::Timestamp::now();
    params.distinguished_name = DistinguishedName::new();
    // Upstream names it `<host>@<unix time>` so successive certificates are told apart.
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{node_name}@{}", now.as_second()),
    );
    let day = |offset_days: i64| {
        let t = now
            .checked_add(jiff::SignedDuration::from_hours(24 * offset_days))
            .unwrap_or(now)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        rcgen::date_time_ymd(
            i32::from(t.year()),
            t.month().unsigned_abs(),
            t.day().unsigned_abs(),
        )
    };
    // Valid from yesterday: the API server's clock may lag ours.
    params.not_before = day(-1);
    params.not_after = day(SELF_SIGNED_VALIDITY_DAYS);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    match node_name.parse::<IpAddr>() {
        Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
        Err(_) if !node_name.is_empty() => params.subject_alt_names.push(SanType::DnsName(
            node_name
                .to_string()
                .try_into()
                .map_err(ServerError::Generate)?,
        )),
        Err(_) => {}
    }
    for ip in ips {
        if !params.subject_alt_names.contains(&SanType::IpAddress(*ip)) {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
    }
    let cert = params.self_signed(&key).map_err(ServerError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The rustls server configuration: the serving certificate, ALPN `h2` then `http/1.1`, and
/// client certificates required (and verified against `client_ca`) when a client CA is given.
pub(crate) fn server_config(
    cert: ServingCert,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certs(path)? {
                roots
                    .add(ca)
                    .map_err(|e| cert_err(path, format!("client CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| ServerError::Tls(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(cert.chain, cert.key)
        .map_err(|e| ServerError::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn cert_err(path: &Path, message: String) -> ServerError {
    ServerError::Certificate {
        path: path.to_path_buf(),
        message,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err(path, "no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn create_dir(path: &Path) -> Result<(), ServerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ServerError::Io {
            op: "create directory",
            path: path.to_path_buf(),
            source,
        })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a key.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), ServerError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ServerError::Io {
            op,
            path: p,
            source,
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    #[test]
    fn self_signed_names_node_and_ips() {
        let ips = [IpAddr::from([10, 0, 0, 5]), "fd00::5".parse().expect("ip")];
        let (pem, key) = self_signed("node-a", &ips).expect("generate");
        assert!(key.contains("PRIVATE KEY"));
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("one cert")
            .expect("valid pem");
        let (_, cert) = X509Certificate::from_der(&der).expect("parse");
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(cn.starts_with("node-a@"), "{cn}");
        let sans = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("has SANs");
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) => format!("ip:{b:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "node-a");
        assert_eq!(names[1], "ip:[10, 0, 0, 5]");
    }

    #[test]
    fn creates_once_then_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new("n1", dir.path().join("pki"));
        config.node_ips = vec![IpAddr::from([127, 0, 0, 1])];
        let first = load_or_create(&config).expect("create");
        let second = load_or_create(&config).expect("reuse");
        assert_eq!(first.chain, second.chain);
        let mode = std::fs::metadata(dir.path().join("pki/kubelet.key"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("key exists");
        assert_eq!(mode, 0o600);
        server_config(first, None).expect("rustls accepts the pair");
    }
}
