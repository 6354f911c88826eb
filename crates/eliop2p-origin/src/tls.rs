//! TLS to an https origin: the system's roots, plus a CA bundle of the operator's
//! (`origin.ca_file`, for origins with a private CA), or no verification at all
//! (`origin.insecure_skip_verify`, which the binary accepts only in tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// PEM bundle of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (tests only).
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// Whether the defaults (system roots, full verification) apply.
    pub fn is_default(&self) -> bool {
        self.ca_file.is_none() && !self.insecure_skip_verify
    }
}

/// The CA certificates of a PEM bundle; an error names the problem, not the key.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client's TLS configuration for `t`.
pub fn client_config(t: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if t.insecure_skip_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    Ok(builder.with_root_certificates(roots(t)?).with_no_client_auth())
}

/// The system's roots plus `t.ca_file`.
fn roots(t: &TlsConfig) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot use is skipped, as the default loader does.
        let _ = roots.add(c);
    }
    if let Some(path) = &t.ca_file {
        for c in load_ca_file(path)? {
            roots.add(c).map_err(|e| e.to_string())?;
        }
    }
    Ok(roots)
}

/// A client certificate and its key (PEM files) to present to a server.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Accepts every certificate; signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connector for http and https URLs whose roots are the system's plus
/// `ca_file` (a PEM bundle), presenting `identity` when a server asks for a
/// client certificate, for clients other than the origin's (the control
/// plane's). `what` names the CA key in errors.
pub fn https_connector(
    ca_file: Option<&Path>,
    identity: Option<&ClientIdentity>,
    connect_timeout: std::time::Duration,
    what: &str,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let t = TlsConfig { ca_file: ca_file.map(Path::to_path_buf), insecure_skip_verify: false };
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match identity {
        None if t.is_default() => builder.with_native_roots().map_err(|e| format!("loading TLS roots: {e}"))?,
        None => builder.with_tls_config(client_config(&t).map_err(|e| format!("{what}: {e}"))?),
        Some(id) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&id.cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("{}: {e}", id.cert.display()))?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&id.key)
                .map_err(|e| format!("{}: {e}", id.key.display()))?;
            let cfg = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots(&t).map_err(|e| format!("{what}: {e}"))?)
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{}: the key does not go with the certificate: {e}", id.key.display()))?;
            builder.with_tls_config(cfg)
        }
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}
