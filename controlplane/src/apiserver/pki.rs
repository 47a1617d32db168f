//! The API server's PKI under `<data-dir>/pki`: a cluster CA, the serving certificate, the admin
//! client certificate with its `admin.kubeconfig`, and the service-account signing key pair.
//!
//! Files follow kubeadm's layout and names (`ca.crt`, `ca.key`, `apiserver.crt`, `sa.key`,
//! `sa.pub`). Everything is created on the first start and reused afterwards; only the serving
//! certificate is re-issued when its SANs no longer cover the current configuration, and a leaf
//! certificate also when it expires within [`RENEW_BEFORE_DAYS`] days or was not issued by the
//! current CA. All keys are ECDSA P-256.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Validity of the CA, in years (kubeadm: 10).
pub const CA_VALIDITY_YEARS: i16 = 10;
/// Validity of leaf certificates (serving, clients), in years (kubeadm: 1).
pub const LEAF_VALIDITY_YEARS: i16 = 1;
/// A leaf certificate expiring within this many days is re-issued at start.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Name of the cluster and context in the kubeconfigs written here.
pub const CLUSTER_NAME: &str = "oxlet";
/// The admin user's name (kubeadm's `kubernetes-admin`).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The admin user's group, bound to cluster-admin by upstream's default RBAC.
pub const ADMIN_GROUP: &str = "system:masters";
/// The user the API server presents to kubelets (kubeadm's `apiserver-kubelet-client`).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// DNS names every serving certificate carries: the in-cluster names of the `kubernetes`
/// Service (as kube-apiserver's `DefaultServiceIPRange` alternate names) and `localhost`.
pub const DEFAULT_DNS_SANS: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

/// Failures of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An existing PEM or DER file could not be understood.
    #[error("parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Generating a key or signing a certificate failed.
    #[error("generate {what}: {source}")]
    Generate {
        /// The key or certificate.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// Encoding a kubeconfig failed.
    #[error("encode kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
    },
}

/// Result with the PKI's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the PKI must cover, derived from the server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiOptions {
    /// The server's data directory; files go to `<data_dir>/pki` and `<data_dir>/admin.kubeconfig`.
    pub data_dir: PathBuf,
    /// The URL written into kubeconfigs, e.g. `https://127.0.0.1:6443`.
    pub server_url: String,
    /// DNS SANs of the serving certificate, beyond [`DEFAULT_DNS_SANS`].
    pub dns_sans: Vec<String>,
    /// IP SANs of the serving certificate, beyond 127.0.0.1 and ::1.
    pub ip_sans: Vec<IpAddr>,
}

impl PkiOptions {
    /// Every SAN the serving certificate must carry, sorted and without duplicates.
    pub fn serving_sans(&self) -> BTreeSet<San> {
        let mut sans: BTreeSet<San> = DEFAULT_DNS_SANS
            .iter()
            .map(|s| San::Dns(s.to_string()))
            .collect();
        sans.extend(
            self.dns_sans
                .iter()
                .map(|d| San::Dns(d.to_ascii_lowercase())),
        );
        sans.insert(San::Ip(IpAddr::from([127, 0, 0, 1])));
        sans.insert(San::Ip(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)));
        sans.extend(self.ip_sans.iter().copied().map(San::Ip));
        sans
    }
}

/// One subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// A DNS name (lower case).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

/// A client certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// The loaded PKI: the CA (able to issue certificates) and the serving certificate.
pub struct Pki {
    dir: PathBuf,
    data_dir: PathBuf,
    server_url: String,
    ca_cert_pem: String,
    ca_cert_der: Vec<u8>,
    ca_subject_raw: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    serving_cert_pem: String,
    serving_key_pem: String,
    kubelet_client: ClientCredentials,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the PKI from `<data_dir>/pki`, creating what is missing and re-issuing the serving
    /// certificate when it does not cover `opts` (see the module docs), then (re)writes
    /// `<data_dir>/admin.kubeconfig` when its content changed.
    pub fn load_or_create(opts: &PkiOptions) -> Result<Pki> {
        let dir = opts.data_dir.join("pki");
        create_dir(&opts.data_dir, 0o700)?;
        create_dir(&dir, 0o700)?;

        let ca_crt = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        let (ca_cert_pem, ca_key_pair) = if ca_crt.exists() && ca_key.exists() {
            (read_string(&ca_crt)?, read_key(&ca_key)?)
        } else {
            let (cert, key) = generate_ca()?;
            write_file(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&ca_crt, cert.as_bytes(), 0o644)?;
            tracing::info!(path = %ca_crt.display(), "created cluster CA");
            (cert, key)
        };
        let ca_cert_der = pem_cert_der(&ca_crt, &ca_cert_pem)?;
        let ca = parse_cert(&ca_crt, &ca_cert_der)?;
        let ca_subject_raw = ca.subject().as_raw().to_vec();
        let ca_dn = distinguished_name(&ca_crt, &ca)?;
        drop(ca);
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = ca_dn;
        ca_params.key_usages = ca_key_usages();
        let issuer = Issuer::new(ca_params, ca_key_pair);

        let mut pki = Pki {
            dir,
            data_dir: opts.data_dir.clone(),
            server_url: opts.server_url.clone(),
            ca_cert_pem,
            ca_cert_der,
            ca_subject_raw,
            issuer,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            kubelet_client: ClientCredentials {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        };

        let wanted = opts.serving_sans();
        let serving_crt = pki.dir.join("apiserver.crt");
        let serving_key = pki.dir.join("apiserver.key");
        let reusable = pki.reusable_leaf(&serving_crt, &serving_key, |cert| {
            let have = cert_sans(cert);
            wanted.is_subset(&have)
        })?;
        let (cert_pem, key_pem) = match reusable {
            Some(pair) => pair,
            None => {
                let (cert, key) = pki.issue_serving(&wanted)?;
                write_file(&serving_key, key.as_bytes(), 0o600)?;
                write_file(&serving_crt, cert.as_bytes(), 0o644)?;
                tracing::info!(path = %serving_crt.display(), sans = wanted.len(), "issued serving certificate");
                (cert, key)
            }
        };
        pki.serving_cert_pem = cert_pem;
        pki.serving_key_pem = key_pem;

        let admin_crt = pki.dir.join("admin.crt");
        let admin_key = pki.dir.join("admin.key");
        let admin = match pki.reusable_leaf(&admin_crt, &admin_key, |_| true)? {
            Some((cert_pem, key_pem)) => ClientCredentials { cert_pem, key_pem },
            None => {
                let creds = pki.issue_client_cert(ADMIN_USER, &[ADMIN_GROUP])?;
                write_file(&admin_key, creds.key_pem.as_bytes(), 0o600)?;
                write_file(&admin_crt, creds.cert_pem.as_bytes(), 0o644)?;
                creds
            }
        };
        // The API server's identity toward kubelets (logs, exec, port-forward), as kubeadm's
        // apiserver-kubelet-client; system:masters so an authorizing kubelet lets it in.
        let kc_crt = pki.dir.join("apiserver-kubelet-client.crt");
        let kc_key = pki.dir.join("apiserver-kubelet-client.key");
        pki.kubelet_client = match pki.reusable_leaf(&kc_crt, &kc_key, |_| true)? {
            Some((cert_pem, key_pem)) => ClientCredentials { cert_pem, key_pem },
            None => {
                let creds = pki.issue_client_cert(KUBELET_CLIENT_USER, &[ADMIN_GROUP])?;
                write_file(&kc_key, creds.key_pem.as_bytes(), 0o600)?;
                write_file(&kc_crt, creds.cert_pem.as_bytes(), 0o644)?;
                creds
            }
        };

        let admin_kubeconfig = pki.admin_kubeconfig_path();
        let text = pki.kubeconfig_text(&admin_kubeconfig, ADMIN_USER, &admin)?;
        if std::fs::read_to_string(&admin_kubeconfig).ok().as_deref() != Some(text.as_str()) {
            write_file(&admin_kubeconfig, text.as_bytes(), 0o600)?;
        }

        let sa_key = pki.sa_key_path();
        let sa_pub = pki.sa_pub_path();
        if !(sa_key.exists() && sa_pub.exists()) {
            let key = KeyPair::generate().map_err(generate("service-account key"))?;
            write_file(&sa_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&sa_pub, key.public_key_pem().as_bytes(), 0o644)?;
        }
        Ok(pki)
    }

    /// The directory holding the PKI files (`<data_dir>/pki`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server URL written into kubeconfigs.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// The serving certificate, PEM.
    pub fn serving_cert_pem(&self) -> &str {
        &self.serving_cert_pem
    }

    /// The serving certificate's private key, PEM (PKCS#8).
    pub fn serving_key_pem(&self) -> &str {
        &self.serving_key_pem
    }

    /// The certificate and key the API server presents to kubelets
    /// (`apiserver-kubelet-client.crt`/`.key`).
    pub fn kubelet_client_credentials(&self) -> &ClientCredentials {
        &self.kubelet_client
    }

    /// `<data_dir>/pki/ca.crt`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<data_dir>/admin.kubeconfig`.
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// `<data_dir>/pki/sa.key`: the service-account token signing key (ECDSA P-256, PKCS#8).
    pub fn sa_key_path(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    /// `<data_dir>/pki/sa.pub`: the service-account token verification key (SPKI PEM).
    pub fn sa_pub_path(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// Issues a client certificate for `user` (the CN) in `groups` (the O attributes), as
    /// kube-apiserver's x509 authenticator reads them; valid for [`LEAF_VALIDITY_YEARS`].
    pub fn issue_client_cert(&self, user: &str, groups: &[&str]) -> Result<ClientCredentials> {
        let what = || format!("client certificate for {user}");
        let key = KeyPair::generate().map_err(|source| Error::Generate {
            what: what(),
            source,
        })?;
        let mut params = leaf_params(LEAF_VALIDITY_YEARS);
        params.distinguished_name = DistinguishedName::new();
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate {
                what: what(),
                source,
            })?;
        Ok(ClientCredentials {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a client certificate for `user` in `groups` and writes a kubeconfig using it to
    /// `path` (mode 0600): cluster and context `oxlet`, this server's URL, CA and credentials
    /// embedded. For the kubelet: user `system:node:<name>`, groups `["system:nodes"]`.
    pub fn issue_client_kubeconfig(&self, user: &str, groups: &[&str], path: &Path) -> Result<()> {
        let creds = self.issue_client_cert(user, groups)?;
        let text = self.kubeconfig_text(path, user, &creds)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent, 0o755)?;
        }
        write_file(path, text.as_bytes(), 0o600)
    }

    fn kubeconfig_text(
        &self,
        path: &Path,
        user: &str,
        creds: &ClientCredentials,
    ) -> Result<String> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": self.server_url,
                    "certificate-authority-data": b64(&self.ca_cert_pem),
                },
            }],
            "users": [{
                "name": user,
                "user": {
                    "client-certificate-data": b64(&creds.cert_pem),
                    "client-key-data": b64(&creds.key_pem),
                },
            }],
            "contexts": [{
                "name": CLUSTER_NAME,
                "context": {"cluster": CLUSTER_NAME, "user": user},
            }],
            "current-context": CLUSTER_NAME,
        });
        serde_yaml::to_string(&config).map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    fn issue_serving(&self, sans: &BTreeSet<San>) -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(generate("serving key"))?;
        let mut params = leaf_params(LEAF_VALIDITY_YEARS);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for san in sans {
            params.subject_alt_names.push(match san {
                San::Dns(name) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(generate(format!("serving certificate SAN {name}")))?,
                ),
                San::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate("serving certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The PEMs of an existing leaf certificate and key if both exist, were issued by the
    /// current CA, do not expire soon and pass `check`.
    fn reusable_leaf(
        &self,
        crt: &Path,
        key: &Path,
        check: impl FnOnce(&X509Certificate<'_>) -> bool,
    ) -> Result<Option<(String, String)>> {
        if !(crt.exists() && key.exists()) {
            return Ok(None);
        }
        let cert_pem = read_string(crt)?;
        let key_pem = read_string(key)?;
        let der = pem_cert_der(crt, &cert_pem)?;
        let cert = parse_cert(crt, &der)?;
        let renew_at = jiff::Timestamp::now().as_second() + RENEW_BEFORE_DAYS * 86_400;
        let fresh = cert.validity().not_after.timestamp() > renew_at;
        let ours = cert.issuer().as_raw() == self.ca_subject_raw.as_slice();
        let ok = fresh && ours && check(&cert);
        if !ok {
            tracing::info!(path = %crt.display(), fresh, issued_by_current_ca = ours, "re-issuing certificate");
        }
        Ok(ok.then_some((cert_pem, key_pem)))
    }
}

fn generate<E: Into<rcgen::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
    let what = what.into();
    move |source| Error::Generate {
        what,
        source: source.into(),
    }
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// Params valid from a day ago (clock skew between hosts) for `years`, with a random serial.
fn leaf_params(years: i16) -> CertificateParams {
    let mut params = CertificateParams::default();
    let now = jiff::Timestamp::now();
    let yesterday = now
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .unwrap_or(now)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    params.not_before = rcgen::date_time_ymd(
        i32::from(yesterday.year()),
        yesterday.month().unsigned_abs(),
        yesterday.day().unsigned_abs(),
    );
    // Day 28 at most so that the date exists in every month of the target year.
    params.not_after = rcgen::date_time_ymd(
        i32::from(today.year()) + i32::from(years),
        today.month().unsigned_abs(),
        today.day().min(28).unsigned_abs(),
    );
    let mut serial = *uuid::Uuid::new_v4().as_bytes();
    // A positive INTEGER: the top bit of the first byte clear.
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

fn generate_ca() -> Result<(String, KeyPair)> {
    let key = KeyPair::generate().map_err(generate("CA key"))?;
    let mut params = leaf_params(CA_VALIDITY_YEARS);
    params.distinguished_name = DistinguishedName::new();
    // A timestamped CN (as k3s's `k3s-server-ca@<unix>`) tells two clusters' CAs apart.
    params.distinguished_name.push(
        DnType::CommonName,
        format!("oxlet-ca@{}", jiff::Timestamp::now().as_second()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = ca_key_usages();
    params.use_authority_key_identifier_extension = false;
    let cert = params
        .self_signed(&key)
        .map_err(generate("CA certificate"))?;
    Ok((cert.pem(), key))
}

/// The CA's subject as rcgen needs it to sign: same attributes, same string types, so the
/// issuer field of what we sign matches the CA's subject byte for byte.
fn distinguished_name(path: &Path, cert: &X509Certificate<'_>) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        for attr in rdn.iter() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(|it| it.collect())
                .unwrap_or_default();
            let value = attr.as_str().map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                message: format!("CA subject attribute {}: {e}", attr.attr_type()),
            })?;
            let tag = attr.attr_value().tag();
            let value = if tag == x509_parser::der_parser::asn1_rs::Tag::PrintableString {
                DnValue::PrintableString(value.try_into().map_err(|e| Error::Parse {
                    path: path.to_path_buf(),
                    message: format!("CA subject attribute {value:?}: {e}"),
                })?)
            } else {
                DnValue::Utf8String(value.to_string())
            };
            dn.push(DnType::from_oid(&oid), value);
        }
    }
    Ok(dn)
}

fn cert_sans(cert: &X509Certificate<'_>) -> BTreeSet<San> {
    let mut out = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    out.insert(San::Dns(d.to_ascii_lowercase()));
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                        out.insert(San::Ip(IpAddr::from(b)));
                    } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                        out.insert(San::Ip(IpAddr::from(b)));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn parse_cert<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

fn pem_cert_der(path: &Path, pem: &str) -> Result<Vec<u8>> {
    let mut reader = pem.as_bytes();
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        None => Err(Error::Parse {
            path: path.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        }),
    }
}

fn read_key(path: &Path) -> Result<KeyPair> {
    let pem = read_string(path)?;
    KeyPair::from_pem(&pem).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| Error::Io {
            op: "create directory",
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `data` to `path` atomically (a temporary file in the same directory, synced, then
/// renamed), so a crash never leaves a half-written key or kubeconfig.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
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

/// The host's name from `/proc/sys/kernel/hostname`, if readable and not empty.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// The host's non-loopback, non-link-local addresses, from `/proc/net/fib_trie` (IPv4 local
/// routes) and `/proc/net/if_inet6`; empty when those are unreadable.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = BTreeSet::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        out.extend(parse_fib_trie_locals(&text));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        out.extend(parse_if_inet6(&text));
    }
    out.into_iter().collect()
}

/// IPv4 addresses the kernel holds as `/32 host LOCAL` routes (the addresses of local
/// interfaces), loopback excluded.
fn parse_fib_trie_locals(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<std::net::Ipv4Addr>() {
            last = Some(ip);
        } else if line.trim() == "/32 host LOCAL" {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback()) {
                out.push(IpAddr::V4(ip));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Global IPv6 addresses of `/proc/net/if_inet6` (`<32 hex> <ifindex> <prefix> <scope> <flags> <name>`).
fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(_), Some(_), Some(scope)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // Scope 00 is global; loopback is 10, link-local 20.
        if scope != "00" || hex.len() != 32 {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        out.push(IpAddr::V6(std::net::Ipv6Addr::from(bits)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_trie_yields_local_host_routes_without_loopback() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.0\n           /24 link UNICAST\n        |-- 10.0.2.15\n           /32 host LOCAL\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n        |-- 10.0.2.15\n           /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie_locals(text),
            vec![IpAddr::from([10, 0, 2, 15])]
        );
    }

    #[test]
    fn if_inet6_keeps_global_scope_only() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\n20010db8000000000000000000000005 02 40 00 00     eth0\n";
        assert_eq!(
            parse_if_inet6(text),
            vec!["2001:db8::5".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn serving_sans_include_defaults_and_extras() {
        let opts = PkiOptions {
            data_dir: PathBuf::from("/nonexistent"),
            server_url: "https://127.0.0.1:6443".into(),
            dns_sans: vec!["Node-A".into()],
            ip_sans: vec![IpAddr::from([10, 43, 0, 1])],
        };
        let sans = opts.serving_sans();
        for want in [
            San::Dns("kubernetes.default.svc.cluster.local".into()),
            San::Dns("node-a".into()),
            San::Ip(IpAddr::from([10, 43, 0, 1])),
            San::Ip(IpAddr::from([127, 0, 0, 1])),
            San::Ip("::1".parse().expect("ip")),
        ] {
            assert!(sans.contains(&want), "{want:?} missing from {sans:?}");
        }
    }
}
