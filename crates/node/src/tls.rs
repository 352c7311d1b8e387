//! TLS for JavaScript: the settings checked (arbiter), TLS turned on for
//! some of a worker's listeners, session-ticket keys set, and a
//! connection's client certificate read. The logic is rwsgi_core::tls.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use rwsgi_core::tls::{self, CertReqs, TlsSettings};

use crate::js::token;
use crate::NativeServer;

/// The TLS settings, as src/settings/ resolved them.
#[napi(object)]
pub struct TlsOptions {
    pub certfile: String,
    pub keyfile: String,
    pub ca_certs: Option<String>,
    /// `none`, `optional` or `required`.
    pub cert_reqs: String,
    /// `1.2` or `1.3`.
    pub min_version: String,
    pub ciphers: Vec<String>,
    pub alpn: Vec<String>,
}

fn settings(options: &TlsOptions) -> Result<TlsSettings> {
    Ok(TlsSettings {
        certfile: options.certfile.clone(),
        keyfile: options.keyfile.clone(),
        ca_certs: options.ca_certs.clone(),
        cert_reqs: CertReqs::parse(&options.cert_reqs).map_err(Error::from_reason)?,
        min_version: options.min_version.clone(),
        ciphers: options.ciphers.clone(),
        alpn: options.alpn.clone(),
    })
}

/// Loads and checks the files and settings as a worker would; throws with
/// a message naming the file or setting at fault.
#[napi]
pub fn check_tls(options: TlsOptions) -> Result<()> {
    tls::check(&settings(&options)?).map_err(|e| Error::from_reason(e.to_string()))
}

/// Ticket keys as the arbiter hands them: each `TICKET_KEY_LEN` bytes.
#[napi]
pub const TICKET_KEY_BYTES: u32 = tls::TICKET_KEY_LEN as u32;

/// A client certificate, in the shape of Node's `getPeerCertificate()`
/// where it overlaps.
#[napi(object)]
pub struct PeerCertificate {
    /// The distinguished name, `CN=client, O=Example`.
    pub subject: String,
    pub issuer: String,
    pub serial_number: String,
    pub valid_from: String,
    pub valid_to: String,
    pub raw: Buffer,
}

#[napi]
impl NativeServer {
    /// Serves the listeners at `listeners` (indexes into the descriptors
    /// the server was made with) over TLS, sealing session tickets with
    /// `ticketKeys` (the first seals, all open; none: no tickets).
    #[napi]
    pub fn enable_tls(
        &self,
        options: TlsOptions,
        listeners: Vec<u32>,
        ticket_keys: Vec<Buffer>,
    ) -> Result<()> {
        self.set_ticket_keys(ticket_keys)?;
        let config = tls::server_config(&settings(&options)?, self.tickets.clone())
            .map_err(|e| Error::from_reason(e.to_string()))?;
        let indexes: Vec<usize> = listeners.iter().map(|&i| i as usize).collect();
        self.engine()?.enable_tls(config, &indexes);
        Ok(())
    }

    /// Replaces the session-ticket keys (the arbiter rotates them).
    #[napi]
    pub fn set_ticket_keys(&self, ticket_keys: Vec<Buffer>) -> Result<()> {
        let keys: Vec<Vec<u8>> = ticket_keys.iter().map(|k| k.to_vec()).collect();
        self.tickets
            .set(&keys)
            .map_err(|e| Error::from_reason(e.to_string()))
    }

    /// `[version, cipher suite]` of `conn` (`TLSv1.3`,
    /// `TLS_AES_128_GCM_SHA256`), or null when it is not over TLS.
    #[napi]
    pub fn tls_negotiated(&self, conn: f64) -> Result<Option<Vec<String>>> {
        let Some(token) = token(conn) else {
            return Ok(None);
        };
        Ok(self
            .engine()?
            .tls_negotiated(token)
            .map(|(version, suite)| vec![version, suite]))
    }

    /// The verified client certificate of `conn`, or null.
    #[napi]
    pub fn peer_certificate(&self, conn: f64) -> Result<Option<PeerCertificate>> {
        let Some(token) = token(conn) else {
            return Ok(None);
        };
        let engine = self.engine()?;
        Ok(engine.peer_certificate(token).map(|c| PeerCertificate {
            subject: c.subject,
            issuer: c.issuer,
            serial_number: c.serial,
            valid_from: c.not_before,
            valid_to: c.not_after,
            raw: c.der.into(),
        }))
    }
}
