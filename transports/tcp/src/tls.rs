//! rustls client settings shared by the TLS and WSS transports: the webpki roots,
//! plus a custom CA file, or a single pinned certificate (its SHA-256) for a
//! development server's self-signed certificate.

use std::sync::Arc;

use dialtone_core::parts::TlsSettings;
use dialtone_core::{ErrorCode, VoiceError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

fn err(msg: impl Into<String>) -> VoiceError {
    VoiceError::new(ErrorCode::SignalingConnectionError, msg)
}

/// The ring provider (the only one compiled in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads PEM certificates.
pub fn read_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, VoiceError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| err(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the PEM data"));
    }
    Ok(certs)
}

/// A client configuration for these settings.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, VoiceError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS set-up: {e}")))?;
    let config = if let Some(pin) = &settings.pinned_cert_sha256 {
        let pin =
            parse_hex(pin).ok_or_else(|| err(format!("pinned_cert_sha256 {pin:?} is not 64 hex digits")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { sha256: pin, provider: provider() }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| err(format!("cannot read CA file {}: {e}", path.display())))?;
            for cert in read_pem_certs(&pem)? {
                roots.add(cert).map_err(|e| err(format!("bad CA certificate in {}: {e}", path.display())))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The SHA-256 of a DER certificate, as lowercase hex.
pub fn cert_sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Trusts exactly one certificate, named by its SHA-256; signatures are still checked.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server certificate does not match the pinned SHA-256".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server name to present for a host (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, VoiceError> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_owned()).map_err(|e| err(format!("bad TLS server name {host:?}: {e}")))
}
