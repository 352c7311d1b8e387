//! TLS settings made into a rustls `ServerConfig` (ring provider): the PEM
//! files read and checked with errors that name the file and the problem,
//! the cipher suites and versions chosen, client-certificate verification,
//! and the session-ticket keys every worker shares (made by the arbiter),
//! so a client resumes on whichever worker its next connection reaches.
//! The per-connection layer is tls_conn.rs.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

/// Whether clients must present a certificate (gunicorn's `cert_reqs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertReqs {
    None,
    Optional,
    Required,
}

impl CertReqs {
    pub fn parse(name: &str) -> Result<CertReqs, String> {
        match name {
            "none" => Ok(CertReqs::None),
            "optional" => Ok(CertReqs::Optional),
            "required" => Ok(CertReqs::Required),
            other => Err(format!(
                "--cert-reqs must be none, optional or required, got {other:?}"
            )),
        }
    }
}

/// The TLS settings as the operator gave them.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub certfile: String,
    pub keyfile: String,
    /// CA certificates client certificates are verified against.
    pub ca_certs: Option<String>,
    pub cert_reqs: CertReqs,
    /// "1.2" or "1.3".
    pub min_version: String,
    /// IANA suite names (`TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`); empty: rustls' defaults.
    pub ciphers: Vec<String>,
    /// ALPN protocol names offered, in preference order.
    pub alpn: Vec<String>,
}

/// A TLS setting that cannot be served, naming the file or setting at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(message: String) -> Result<T, TlsError> {
    Err(TlsError(message))
}

fn read_file(path: &str, setting: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path))
        .or_else(|e| fail(format!("{setting} {path}: cannot read it: {e}")))
}

fn certificates(path: &str, setting: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, setting)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => fail(format!(
            "{setting} {path}: no certificate in it (PEM `BEGIN CERTIFICATE` blocks)"
        )),
        Err(e) => fail(format!("{setting} {path}: not a PEM certificate file: {e}")),
    }
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "--keyfile")?;
    PrivateKeyDer::from_pem_slice(&pem).or_else(|e| {
        fail(format!(
            "--keyfile {path}: no private key in it (PEM PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })
}

/// Refuses a leaf certificate outside its validity period: every client
/// would refuse it, so a server serving it only looks up.
fn check_validity(path: &str, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).or_else(|e| {
        fail(format!(
            "--certfile {path}: the first certificate does not parse: {e}"
        ))
    })?;
    let validity = cert.validity();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if validity.not_after.timestamp() < now {
        return fail(format!(
            "--certfile {path}: the certificate expired on {}",
            validity.not_after
        ));
    }
    if validity.not_before.timestamp() > now {
        return fail(format!(
            "--certfile {path}: the certificate is not valid before {}",
            validity.not_before
        ));
    }
    Ok(())
}

fn provider(ciphers: &[String]) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if ciphers.is_empty() {
        return Ok(provider);
    }
    let known = provider.cipher_suites.clone();
    let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    let mut chosen = Vec::new();
    for wanted in ciphers {
        match known.iter().find(|s| name(s).eq_ignore_ascii_case(wanted)) {
            Some(suite) => chosen.push(*suite),
            None => {
                let names: Vec<String> = known.iter().map(name).collect();
                return fail(format!(
                    "--ciphers: unknown cipher suite {wanted:?}; known: {}",
                    names.join(", ")
                ));
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: &str) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
    match min {
        "1.2" => Ok(rustls::ALL_VERSIONS),
        "1.3" => Ok(&TLS13_ONLY),
        other => fail(format!(
            "--tls-min-version must be 1.2 or 1.3, got {other:?}"
        )),
    }
}

/// A config serving `settings`, its session tickets sealed with `tickets`.
pub fn server_config(
    settings: &TlsSettings,
    tickets: Arc<TicketKeys>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&settings.certfile, "--certfile")?;
    check_validity(&settings.certfile, &chain[0])?;
    let key = private_key(&settings.keyfile)?;
    let provider = Arc::new(provider(&settings.ciphers)?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(&settings.min_version)?)
        .or_else(|e| {
            fail(format!(
                "--ciphers: no suite left for --tls-min-version {}: {e}",
                settings.min_version
            ))
        })?;
    let builder =
        match (&settings.ca_certs, settings.cert_reqs) {
            (_, CertReqs::None) => builder.with_no_client_auth(),
            (None, reqs) => {
                return fail(format!(
                "--cert-reqs {}: needs --ca-certs, the CAs client certificates are checked against",
                if reqs == CertReqs::Required { "required" } else { "optional" }
            ))
            }
            (Some(ca), reqs) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca, "--ca-certs")? {
                    roots.add(cert).or_else(|e| {
                        fail(format!("--ca-certs {ca}: a certificate is unusable: {e}"))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if reqs == CertReqs::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .or_else(|e| fail(format!("--ca-certs {ca}: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
    let mut config = builder.with_single_cert(chain, key).or_else(|e| {
        fail(format!(
            "--keyfile {} does not go with --certfile {}: {e}",
            settings.keyfile, settings.certfile
        ))
    })?;
    config.alpn_protocols = settings
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    config.ticketer = tickets;
    // Tickets carry resumption across workers; a per-process cache cannot.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Loads and checks `settings` as a worker would, without serving: what
/// the arbiter runs before any worker starts, and on HUP.
pub fn check(settings: &TlsSettings) -> Result<(), TlsError> {
    server_config(settings, Arc::new(TicketKeys::default())).map(|_| ())
}

/// Bytes of one ticket key as the arbiter makes it: a 16-byte name (put in
/// the ticket, so the key that sealed it is found) and a 32-byte AES key.
pub const TICKET_KEY_LEN: usize = 48;
const KEY_NAME_LEN: usize = 16;
/// Tickets are rotated this often by the arbiter; the previous key stays
/// accepted, so a ticket is good for up to twice this.
pub const TICKET_LIFETIME_SECS: u32 = 12 * 3600;

struct TicketKey {
    name: [u8; KEY_NAME_LEN],
    key: LessSafeKey,
}

impl TicketKey {
    fn new(bytes: &[u8]) -> Option<TicketKey> {
        if bytes.len() != TICKET_KEY_LEN {
            return None;
        }
        let mut name = [0u8; KEY_NAME_LEN];
        name.copy_from_slice(&bytes[..KEY_NAME_LEN]);
        let key = UnboundKey::new(&AES_256_GCM, &bytes[KEY_NAME_LEN..]).ok()?;
        Some(TicketKey {
            name,
            key: LessSafeKey::new(key),
        })
    }
}

/// Session-ticket keys shared by every worker: tickets are sealed with the
/// current key and opened with the current or the previous one. Without
/// keys (a check, or a worker given none) no tickets are issued.
pub struct TicketKeys {
    keys: RwLock<Vec<TicketKey>>,
    random: SystemRandom,
}

impl Default for TicketKeys {
    fn default() -> Self {
        TicketKeys {
            keys: RwLock::new(Vec::new()),
            random: SystemRandom::new(),
        }
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKeys")
    }
}

impl TicketKeys {
    /// Replaces the keys: the first seals, all open. Each must be
    /// `TICKET_KEY_LEN` bytes.
    pub fn set(&self, keys: &[Vec<u8>]) -> Result<(), TlsError> {
        let parsed: Option<Vec<TicketKey>> = keys.iter().map(|k| TicketKey::new(k)).collect();
        let parsed = parsed.ok_or_else(|| {
            TlsError(format!(
                "a session ticket key must be {TICKET_KEY_LEN} bytes"
            ))
        })?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = parsed;
        }
        Ok(())
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        self.keys.read().is_ok_and(|k| !k.is_empty())
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.read().ok()?;
        let current = keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(KEY_NAME_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&current.name);
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&current.name),
                &mut sealed,
            )
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let name = cipher.get(..KEY_NAME_LEN)?;
        let nonce = cipher.get(KEY_NAME_LEN..KEY_NAME_LEN + NONCE_LEN)?;
        let sealed = cipher.get(KEY_NAME_LEN + NONCE_LEN..)?;
        let keys = self.keys.read().ok()?;
        let key = keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(&key.name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A verified client certificate, as apps see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's distinguished name (RFC 4514 order, `CN=..., O=...`).
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// The certificate as sent (DER).
    pub der: Vec<u8>,
}

impl PeerCertificate {
    pub fn of(der: &[u8]) -> Option<PeerCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        Some(PeerCertificate {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
            der: der.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> Vec<u8> {
        (0..TICKET_KEY_LEN as u8).map(|i| i ^ seed).collect()
    }

    #[test]
    fn tickets_open_with_the_current_or_previous_key_only() {
        let a = TicketKeys::default();
        assert!(!a.enabled());
        assert_eq!(a.encrypt(b"state"), None);
        a.set(&[keys(1)]).unwrap();
        let ticket = a.encrypt(b"state").unwrap();
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        // Another worker with the same keys opens it; after one rotation too.
        let b = TicketKeys::default();
        b.set(&[keys(2), keys(1)]).unwrap();
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        b.set(&[keys(3), keys(2)]).unwrap();
        assert_eq!(b.decrypt(&ticket), None);
        // Tampered or cut tickets are refused, never a panic.
        let mut bad = ticket.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(a.decrypt(&bad), None);
        for n in 0..ticket.len() {
            assert_eq!(a.decrypt(&ticket[..n]), None);
        }
        assert!(a.set(&[vec![0; 5]]).is_err());
    }

    #[test]
    fn unknown_ciphers_and_versions_are_named() {
        let err = provider(&["TLS_NOPE".to_string()]).unwrap_err();
        assert!(err.0.contains("TLS_NOPE") && err.0.contains("TLS13_AES_128_GCM_SHA256"));
        let one = provider(&["tls13_aes_128_gcm_sha256".to_string()]).unwrap();
        assert_eq!(one.cipher_suites.len(), 1);
        assert!(versions("1.1").is_err());
        assert_eq!(versions("1.3").unwrap().len(), 1);
    }

    #[test]
    fn missing_files_are_named() {
        let settings = TlsSettings {
            certfile: "/nonexistent/cert.pem".into(),
            keyfile: "/nonexistent/key.pem".into(),
            ca_certs: None,
            cert_reqs: CertReqs::None,
            min_version: "1.2".into(),
            ciphers: vec![],
            alpn: vec!["http/1.1".into()],
        };
        let err = check(&settings).unwrap_err();
        assert!(err
            .0
            .starts_with("--certfile /nonexistent/cert.pem: cannot read it"));
    }
}
