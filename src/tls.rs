//! TLS settings (`wss://`): a rustls `ServerConfig` from PEM files, or from a
//! self-signed certificate made at start. The record layer itself runs in the
//! driver (`server/transport.rs`); nothing here does I/O on connections.
//!
//! Backend: rustls with `ring`. It builds with a C compiler alone (aws-lc-rs
//! needs cmake and, on some targets, NASM), which keeps `cargo install` and CI
//! simple, and on x86-64 its P-256, X25519 and AES-GCM are the assembly that
//! BoringSSL uses: the handshake and record costs are the cryptography's.
//! ALPN offers `http/1.1` only; no client certificates. And the client side
//! for a `rediss://` cluster (`client_config`) and a proxy's `wss://`
//! upstreams (`proxy_client_config`: the system's roots, `--proxy-ca`, or
//! `--proxy-insecure`).

use std::fmt::Write as _;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// The TLS settings a server runs with: one `rustls::ServerConfig`, shared by
/// every connection.
pub type TlsConfig = Arc<ServerConfig>;

/// A certificate made at start for `localhost`, `127.0.0.1` and `::1`.
pub struct SelfSigned {
    /// The server configuration that presents it.
    pub config: TlsConfig,
    /// The certificate as PEM, for a client to trust (`--tls-cert-out`).
    pub cert_pem: String,
    /// SHA-256 of the certificate's DER, as colon-separated hex.
    pub fingerprint: String,
}

/// Builds the server configuration for a certificate chain and its key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No TLS 1.3 session tickets. They go out right after the client's
    // Finished, while a threaded client (Python websockets' sync client: one
    // SSL object read by a background thread and written by the caller)
    // writes its GET; about 1 connection in 40 lost the request that way
    // (seen with tcpdump: tickets in, the client's ACK, then nothing). A test
    // server's clients gain nothing from resumption, and each connection
    // saves the tickets' work.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// ALPN (RFC 7301): `h2` first when HTTP/2 is served, then `http/1.1`
/// (the server picks: a client offering both gets HTTP/2).
pub fn offer_http2(config: &mut TlsConfig, http2: bool) {
    let mut alpn = vec![b"http/1.1".to_vec()];
    if http2 {
        alpn.insert(0, b"h2".to_vec());
    }
    Arc::make_mut(config).alpn_protocols = alpn;
}

/// Reads a PEM certificate chain and a PEM private key (PKCS#8, RSA or SEC1).
pub fn from_pem_files(cert: &str, key: &str) -> Result<TlsConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {cert}: no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {key}: {e}"))?;
    server_config(chain, key)
}

/// Makes a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1`
/// and `::1`.
pub fn self_signed() -> Result<SelfSigned, String> {
    let err = |e: rcgen::Error| format!("self-signed certificate: {e}");
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "echocast self-signed (localhost)",
    );
    let key_pair = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key_pair).map_err(err)?;
    let der = cert.der().clone();
    let fingerprint = fingerprint(&der);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    Ok(SelfSigned {
        config: server_config(vec![der], key)?,
        cert_pem: cert.pem(),
        fingerprint,
    })
}

/// SHA-256 of a certificate, as `AB:CD:…` (what browsers and
/// `openssl x509 -fingerprint -sha256` show).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// The TLS settings the command line asks for (`None`: plain only): a
/// certificate and key (`--tls-cert`, `--tls-key`), or a self-signed
/// certificate made now (`make_one`: `--tls-self-signed`, written as PEM to
/// `cert_out` if given).
pub fn from_flags(
    files: Option<(&str, &str)>,
    make_one: bool,
    cert_out: Option<&str>,
) -> Result<Option<TlsConfig>, String> {
    if let Some((cert, key)) = files {
        let config = from_pem_files(cert, key)?;
        log::info!("TLS: certificate {cert}");
        return Ok(Some(config));
    }
    if !make_one {
        return Ok(None);
    }
    let made = self_signed()?;
    log::info!(
        "TLS: self-signed certificate for localhost, 127.0.0.1 and ::1, SHA-256 {}",
        made.fingerprint
    );
    if let Some(path) = cert_out {
        std::fs::write(path, &made.cert_pem).map_err(|e| format!("--tls-cert-out {path}: {e}"))?;
    }
    Ok(Some(made.config))
}

/// Where Debian, Alpine, Fedora and others keep the system's trusted roots
/// (one PEM bundle), for `rediss://` without `--cluster-ca`.
const SYSTEM_ROOTS: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A client configuration for `rediss://` (`--cluster`): the roots of
/// `ca` (a PEM bundle), or else the system's bundle.
pub fn client_config(ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = match ca {
        Some(p) => p.to_owned(),
        None => SYSTEM_ROOTS
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("no CA bundle given and no system CA bundle found")?
            .to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path).map_err(|e| format!("{path}: {e}"))? {
        let cert = cert.map_err(|e| format!("{path}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{path}: no certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The client side of a proxy's `wss://` upstreams: the roots of `ca` (a
/// PEM bundle), or the system's; with `insecure`, any certificate is
/// accepted (a self-signed staging server; the handshake's signatures are
/// still checked). ALPN offers `http/1.1`, the protocol a WebSocket upgrade
/// needs.
pub fn proxy_client_config(
    ca: Option<&str>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut config = if insecure {
        log::warn!("--proxy-insecure: the certificates of wss:// upstreams are not checked");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        Arc::unwrap_or_clone(client_config(ca)?)
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `--proxy-insecure`: any certificate chain and name is accepted; the
/// handshake's signatures are verified with the certificate presented, so
/// the peer still holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_loads_back_from_pem() {
        let s = self_signed().unwrap();
        assert!(s.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(s.fingerprint.len(), 95);
        assert_eq!(s.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let der = CertificateDer::from_pem_slice(s.cert_pem.as_bytes()).unwrap();
        assert_eq!(fingerprint(&der), s.fingerprint);
    }

    #[test]
    fn missing_or_empty_files_are_one_line_errors() {
        let e = from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(e.starts_with("--tls-cert /nonexistent/cert.pem"), "{e}");
        assert!(!e.contains('\n'));
        let dir = std::env::temp_dir().join(format!("echocast-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = from_pem_files(empty.to_str().unwrap(), "/nonexistent/key.pem").unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
