//! Token keys and JWS compact signatures, on ring.
//!
//! kube-apiserver signs with the key of `--service-account-signing-key-file` (ES256 for P-256
//! keys, RS256 for RSA keys) and verifies with every key of `--service-account-key-file`
//! (pkg/serviceaccount/jwt.go). The JWS header carries `kid`: the unpadded base64url SHA-256 of
//! the key's DER SubjectPublicKeyInfo, the same value upstream computes, so tokens, keys and
//! OIDC discovery documents line up across implementations.
//!
//! Accepted PEM blocks: `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1), `RSA PRIVATE KEY`
//! (PKCS#1) for signing; those plus `PUBLIC KEY`, `RSA PUBLIC KEY` and `CERTIFICATE` for
//! verification. ECDSA keys must be on P-256.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::Value;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

/// DER of the OID id-ecPublicKey (1.2.840.10045.2.1), content only.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the OID prime256v1 (1.2.840.10045.3.1.7), content only.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID rsaEncryption (1.2.840.113549.1.1.1), content only.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// A key that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The JWS algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256, signature `r || s` (64 bytes).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }
}

enum Signer {
    Ecdsa(signature::EcdsaKeyPair),
    Rsa(signature::RsaKeyPair),
}

/// The private key tokens are signed with.
pub struct SigningKey {
    signer: Signer,
    public: VerifyingKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg)
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

/// A public key tokens are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: String,
    /// The uncompressed EC point, or the PKCS#1 RSAPublicKey DER: what ring verifies with.
    raw: Vec<u8>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish()
    }
}

impl VerifyingKey {
    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    fn from_ec_point(point: &[u8]) -> Result<Self, KeyError> {
        // P-256 uncompressed points are 65 bytes starting with 0x04.
        if point.len() != 65 || point[0] != 0x04 {
            return Err(KeyError(
                "ECDSA public key is not an uncompressed P-256 point".into(),
            ));
        }
        Ok(VerifyingKey {
            alg: Algorithm::Es256,
            kid: key_id(&ec_spki(point)),
            raw: point.to_vec(),
        })
    }

    fn from_rsa_pkcs1(der: &[u8]) -> VerifyingKey {
        VerifyingKey {
            alg: Algorithm::Rs256,
            kid: key_id(&rsa_spki(der)),
            raw: der.to_vec(),
        }
    }

    fn from_spki(der: &[u8]) -> Result<Self, KeyError> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| KeyError(format!("invalid public key: {e}")))?;
        let alg = spki.algorithm.algorithm.as_bytes();
        let bits = spki.subject_public_key.data.as_ref();
        if alg == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve.as_ref().map(|c| c.as_bytes()) != Some(OID_P256) {
                return Err(KeyError(
                    "ECDSA keys must use the P-256 curve (ES256)".into(),
                ));
            }
            Self::from_ec_point(bits)
        } else if alg == OID_RSA {
            Ok(Self::from_rsa_pkcs1(bits))
        } else {
            Err(KeyError(format!(
                "unsupported public key algorithm {}",
                spki.algorithm.algorithm
            )))
        }
    }

    fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        if alg != self.alg {
            return false;
        }
        let params: &dyn signature::VerificationAlgorithm = match alg {
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        signature::UnparsedPublicKey::new(params, &self.raw)
            .verify(message, sig)
            .is_ok()
    }
}

impl SigningKey {
    /// The first private key in `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        for block in pem_blocks(pem)? {
            match block.label.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8(&block.der),
                "EC PRIVATE KEY" => return Self::from_pkcs8(&sec1_to_pkcs8(&block.der)),
                "RSA PRIVATE KEY" => {
                    let pair = signature::RsaKeyPair::from_der(&block.der)
                        .map_err(|e| KeyError(format!("invalid RSA private key: {e}")))?;
                    return Ok(Self::rsa(pair));
                }
                _ => {}
            }
        }
        Err(KeyError("no private key found in PEM data".into()))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        match signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &rng,
        ) {
            Ok(pair) => {
                let public = VerifyingKey::from_ec_point(pair.public_key().as_ref())?;
                Ok(SigningKey {
                    signer: Signer::Ecdsa(pair),
                    public,
                    rng,
                })
            }
            Err(ec_err) => match signature::RsaKeyPair::from_pkcs8(der) {
                Ok(pair) => Ok(Self::rsa(pair)),
                Err(rsa_err) => Err(KeyError(format!(
                    "unsupported PKCS#8 private key (as ECDSA P-256: {ec_err}; as RSA: {rsa_err})"
                ))),
            },
        }
    }

    fn rsa(pair: signature::RsaKeyPair) -> Self {
        let public = VerifyingKey::from_rsa_pkcs1(pair.public().as_ref());
        SigningKey {
            signer: Signer::Rsa(pair),
            public,
            rng: SystemRandom::new(),
        }
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// A JWS compact serialization of `claims`, with header `{"alg", "kid"}` as upstream's
    /// signer writes it.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": self.public.alg.name(), "kid": self.public.kid});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = match &self.signer {
            Signer::Ecdsa(pair) => pair
                .sign(&self.rng, out.as_bytes())
                .map_err(|_| KeyError("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    out.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| KeyError("RSA signing failed".into()))?;
                sig
            }
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

/// Every public key in `pem`: public keys, certificates, and the public half of private keys
/// (upstream's `keyutil.PublicKeysFromFile` accepts all of them).
pub fn verifying_keys_from_pem(pem: &str) -> Result<Vec<VerifyingKey>, KeyError> {
    let mut keys = Vec::new();
    for block in pem_blocks(pem)? {
        match block.label.as_str() {
            "PUBLIC KEY" => keys.push(VerifyingKey::from_spki(&block.der)?),
            "RSA PUBLIC KEY" => keys.push(VerifyingKey::from_rsa_pkcs1(&block.der)),
            "CERTIFICATE" => {
                let (_, cert) = X509Certificate::from_der(&block.der)
                    .map_err(|e| KeyError(format!("invalid certificate: {e}")))?;
                keys.push(VerifyingKey::from_spki(cert.public_key().raw)?);
            }
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                let text = format!(
                    "-----BEGIN {0}-----\n{1}\n-----END {0}-----\n",
                    block.label,
                    STANDARD.encode(&block.der)
                );
                keys.push(SigningKey::from_pem(&text)?.public);
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err(KeyError("no public key found in PEM data".into()));
    }
    Ok(keys)
}

/// Why a token's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWS compact serialization with JSON header and claims.
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm other than ES256 or RS256.
    #[error("unsupported token signing algorithm {0:?}")]
    Algorithm(String),
    /// No key verifies the signature.
    #[error("token signature is invalid")]
    Signature,
}

/// The header and claims of a compact JWS, without checking the signature (used only to pick
/// the authenticator by issuer before verifying, as upstream's `hasCorrectIssuer`).
pub fn decode_unverified(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, c, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    (header.is_object() && claims.is_object()).then_some((header, claims))
}

/// Verifies `token` against `keys` (those with the header's `kid` first, then the rest, since
/// tokens from other signers may carry no or foreign key ids) and returns its claims.
pub fn verify_jwt(token: &str, keys: &[VerifyingKey]) -> Result<Value, VerifyError> {
    let (header, claims) = decode_unverified(token).ok_or(VerifyError::Malformed)?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("ES256") => Algorithm::Es256,
        Some("RS256") => Algorithm::Rs256,
        other => {
            return Err(VerifyError::Algorithm(
                other.unwrap_or_default().to_string(),
            ))
        }
    };
    let (signed, sig) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| VerifyError::Malformed)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let (preferred, rest): (Vec<&VerifyingKey>, Vec<&VerifyingKey>) =
        keys.iter().partition(|k| Some(k.kid.as_str()) == kid);
    if preferred
        .into_iter()
        .chain(rest)
        .any(|k| k.verify(alg, signed.as_bytes(), &sig))
    {
        Ok(claims)
    } else {
        Err(VerifyError::Signature)
    }
}

/// The key id upstream gives a public key: unpadded base64url of SHA-256 over its DER
/// SubjectPublicKeyInfo (pkg/serviceaccount/jwt.go `keyIDFromPublicKey`).
fn key_id(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

struct PemBlock {
    label: String,
    der: Vec<u8>,
}

fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_string(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let Some((begin, body)) = current.take() else {
                continue;
            };
            if begin != label {
                return Err(KeyError(format!("PEM block {begin:?} ends with {label:?}")));
            }
            let der = STANDARD
                .decode(body.as_bytes())
                .map_err(|e| KeyError(format!("PEM block {label:?}: invalid base64: {e}")))?;
            blocks.push(PemBlock {
                label: label.to_string(),
                der,
            });
        } else if let Some((label, body)) = current.as_mut() {
            if line.contains(':') {
                // RFC 1421 headers only appear on encrypted keys.
                return Err(KeyError(format!(
                    "PEM block {label:?} is encrypted; only unencrypted keys are supported"
                )));
            }
            body.push_str(line);
        }
    }
    Ok(blocks)
}

/// A DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(content);
    der(0x03, &bits)
}

fn ec_algorithm() -> Vec<u8> {
    der(
        0x30,
        &[der(0x06, OID_EC_PUBLIC_KEY), der(0x06, OID_P256)].concat(),
    )
}

fn ec_spki(point: &[u8]) -> Vec<u8> {
    der(0x30, &[ec_algorithm(), bit_string(point)].concat())
}

fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let alg = der(0x30, &[der(0x06, OID_RSA), der(0x05, &[])].concat());
    der(0x30, &[alg, bit_string(pkcs1)].concat())
}

/// Wraps a SEC1 `ECPrivateKey` in PKCS#8 (version 0, id-ecPublicKey on P-256), which ring reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    der(
        0x30,
        &[der(0x02, &[0]), ec_algorithm(), der(0x04, sec1)].concat(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Generated once with openssl (ecparam/genrsa, pkcs8 -topk8, ec -pubout, rsa -pubout).
    pub(crate) const EC_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIFtOlWvnOsav5g04yPzNRW/ptl5KnbaZlqJtoqBru6qMoAoGCCqGSM49
AwEHoUQDQgAEhlCB4DHzeD2JUoXznFMwVLePZoO1BPySip1O6lfByAGwupGDvLvV
vTMWQL0745gnDGpF7xMeUSbHZhls0tSPjw==
-----END EC PRIVATE KEY-----
";
    const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgW06Va+c6xq/mDTjI
/M1Fb+m2XkqdtpmWom2ioGu7qoyhRANCAASGUIHgMfN4PYlShfOcUzBUt49mg7UE
/JKKnU7qV8HIAbC6kYO8u9W9MxZAvTvjmCcMakXvEx5RJsdmGWzS1I+P
-----END PRIVATE KEY-----
";
    const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhlCB4DHzeD2JUoXznFMwVLePZoO1
BPySip1O6lfByAGwupGDvLvVvTMWQL0745gnDGpF7xMeUSbHZhls0tSPjw==
-----END PUBLIC KEY-----
";

    fn rcgen_key() -> rcgen::KeyPair {
        rcgen::KeyPair::generate().expect("generate P-256 key")
    }

    #[test]
    fn sec1_pkcs8_and_public_pem_agree() {
        let a = SigningKey::from_pem(EC_SEC1).expect("sec1");
        let b = SigningKey::from_pem(EC_PKCS8).expect("pkcs8");
        let pubs = verifying_keys_from_pem(EC_PUB).expect("public");
        assert_eq!(a.verifying_key(), b.verifying_key());
        assert_eq!(pubs, vec![a.verifying_key().clone()]);
        assert_eq!(a.verifying_key().alg(), Algorithm::Es256);
        // The kid is the base64url SHA-256 of the SPKI DER, which is exactly the PEM's body.
        let spki = STANDARD
            .decode(
                EC_PUB
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .expect("base64");
        assert_eq!(a.verifying_key().kid(), key_id(&spki));
        assert_eq!(ec_spki(&a.verifying_key().raw), spki);
    }

    #[test]
    fn sign_and_verify_es256() {
        let key = SigningKey::from_pem(&rcgen_key().serialize_pem()).expect("key");
        let claims = serde_json::json!({"iss": "me", "sub": "you"});
        let token = key.sign_jwt(&claims).expect("sign");
        let (header, _) = decode_unverified(&token).expect("decodes");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], key.verifying_key().kid());
        let keys = vec![key.verifying_key().clone()];
        assert_eq!(verify_jwt(&token, &keys), Ok(claims));
        // Another key does not verify it.
        let other = SigningKey::from_pem(&rcgen_key().serialize_pem()).expect("other");
        assert_eq!(
            verify_jwt(&token, &[other.verifying_key().clone()]),
            Err(VerifyError::Signature)
        );
        // A changed payload breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(r#"{"iss":"me","sub":"admin"}"#),
            parts[2]
        );
        assert_eq!(verify_jwt(&forged, &keys), Err(VerifyError::Signature));
        // alg none is refused outright.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            verify_jwt(&none, &keys),
            Err(VerifyError::Algorithm("none".into()))
        );
        assert_eq!(verify_jwt("a.b", &keys), Err(VerifyError::Malformed));
    }

    #[test]
    fn rsa_keys_sign_rs256() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\n".to_string()
            + RSA_PKCS1_BODY
            + "-----END RSA PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(&pem).expect("rsa");
        assert_eq!(key.verifying_key().alg(), Algorithm::Rs256);
        let token = key.sign_jwt(&serde_json::json!({"a": 1})).expect("sign");
        let (header, _) = decode_unverified(&token).expect("decodes");
        assert_eq!(header["alg"], "RS256");
        // The public half read back from the private key PEM verifies.
        let keys = verifying_keys_from_pem(&pem).expect("public from private");
        assert_eq!(verify_jwt(&token, &keys), Ok(serde_json::json!({"a": 1})));
    }

    #[test]
    fn pem_errors() {
        assert!(SigningKey::from_pem("nothing").is_err());
        assert!(verifying_keys_from_pem(EC_PUB).is_ok());
        let enc = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(enc).expect_err("encrypted");
        assert!(err.0.contains("encrypted"), "{err}");
    }

    const RSA_PKCS1_BODY: &str = "MIIEpQIBAAKCAQEAvOoQsAW708Je+NgQeVEvM7yQZsa3Xi//hHHKKA6aXTzwGa61
kVU/pKIeSrWqlSZ43rAFGFnnoHF9lzvo0yyfS7PadWU+Cy8UV+n1WFzMd3TcQJ0V
5W6XU//7AMTb0GB4cVlJkShQipHhltA/qpv9aEMdU3x7iic9R831bijUhBTuY3M/
FGiTy9/lUrqgW5hXYbHm7OulfZviinrvNHKlMmlTXN3+MdCwMvuiXcIuzS0QeU1Z
BLC9yNf9zMcu+RZelAG5a2ADF+18oCWDHNa1OrxEXi/bXWRpYvjM1PfslX/p5T/V
fyh6AGOEJYzMarhd8okyVGvEA6Y8DG+Fz9L68QIDAQABAoIBAADXuRv/5TbsRAja
IItZ/bA+ZBUr8moczrKkNfb4cbR+xBdpPG1vMunPa1Er/vHMCnf70wSpH1Zg4I2J
z9+5RZCh4b8/pLI0veN9K1dUj/jscDBoQvkTWuDItdxABIxTvIB3mdNoREu0m4v/
q85dWcOwS54xYkpbIx6B4FljHJI7lQhffSsZdhYAEVLFhfA/OnqXLIsQB2zM4X8D
EPPN6wPG7OUX530CssKA8JTieKyuzvyj3N3E3Qxk1DlhlNryCLkzYcUjXW0JvKIo
uQB0lBCl3tZApejkDq+H/GL5UD9JOEK3iT6pqrOiPfa96KX/7d12oyEFti8CjDv4
5XUnus0CgYEA8IVTNgutbCBDWwS5QsxUAjzcx6h14EL+az1SQdz3fkk62SwTjzO/
sq0avdiSBmx60RvH73cXdxNJr7LQFNnsrCtD2C4wsjJUzieW2WIm9N50idoK3QYf
E1pz4ppPiaaI7Uzx5vWdONTg9Nri0wEg1SF3DljTda6eusWdT+9hvtMCgYEAyRKA
w+vdb/NJEG31EUgwI62/Z3PUy8ziGIbBX877v41IvnrRg4AXnQSJPyoRT1uaTwb1
D2KiMXd81Vxl0Y9Z2/Ii539UL48M2u53djK8I7OdtSd6YR3LZigKYxzasTj9zjzT
EtnlIkG+dej800DNp7Tma4FtNzk94JDZtyUq7KsCgYEA6RMJ89GVGLabDtShAo4m
ypRYDlK9B7lj+l/OGm0amJI2KMWBnr+zAF6nD1mTCA6PZZvaP7/USVuziENrSQl1
Q9IZSKBaKBSGAdBzaeyne5smq39UD6Mi8goxSmHmualb/zkVIY7Z8Hy6Eg0ayQbK
3j4ztP92yw+QWcWuEAwVWGkCgYEAwd8bVM0ZJ5Y1/qdmwhEOiXg/syoWJaMY5XkY
/p3+UoWRfEfDt71MB1OWWdbf9dpnAIe+xeTeaj/Bl5+NdO95Pv9K9Fbq/yg4xudj
PA5TJUFMcJzt/LHTql41Fbd+jZ5b6fzvr590tQEa+Wl6TN6Q7IEaItIaUkLZDKvd
oB8wMh0CgYEApRncMD8rl3rBffxwb7j7ijM5BwbJv6Hq6RbDwq6SO2HjuH8y9GPz
JQSRRFaCCrWSSmt3Hs7yJ/LRsNQAAqqPGsYotD5Hb+WJdYjfVoQlTOg+FSOOBYoX
qrIJTaZeeCSKU3olOzJeQD+fPJBH7Sxw5CxTtozg+MUitWduDQZ7Csk=
";
}
