//! Mutual TLS on the P2P port (`p2p.tls_cert`, `p2p.tls_key`, `p2p.tls_ca`).
//!
//! Both ends present a certificate of the cluster CA. A node's identity is in its
//! certificate: a DNS SAN equal to its node id, or a URI SAN
//! `eliop2p://node/<id>` (IP SANs may be there too; they are not identities). The
//! listener accepts a connection only when the node id the peer announces in its
//! `HELLO` is one of its certificate's identities, so the peer id every gossip
//! and chunk rule keys on is the certificate's, not a claim. The dialer checks
//! that the listener's certificate is of the cluster CA, valid now, and names a
//! node; it does not know which node an address belongs to before it asks.
//!
//! Certificates are read again when their files change (checked every few
//! seconds) and on SIGHUP; connections made before keep their session, new ones
//! use the new files. A reload that fails keeps the files in force and is logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use eliop2p_core::identity::node_ids;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The files of a node's P2P TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster CA (PEM): the only issuer accepted from peers.
    pub ca: PathBuf,
    /// During a rollout: the listener also takes peers without TLS (the cluster
    /// secret's handshake), and the dialer falls back to it for a peer that does
    /// not speak TLS.
    pub rollout: bool,
}

struct Loaded {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    identities: Vec<String>,
    stamps: Vec<Option<SystemTime>>,
}

/// The node's P2P TLS: the current configurations, reloaded when the files
/// change, and handshake failures by reason.
pub struct P2pTls {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// The files' modification times when a reload last failed: the same broken
    /// files are not tried (and logged) again every check.
    failed_stamps: Mutex<Option<Vec<Option<SystemTime>>>>,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    reloads: std::sync::atomic::AtomicU64,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(files: &TlsFiles) -> Result<Loaded, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("p2p.tls_cert {}: {e}", files.cert.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!("p2p.tls_cert {}: no PEM certificate in it", files.cert.display()));
    };
    let identities = node_ids(leaf);
    if identities.is_empty() {
        return Err(format!(
            "p2p.tls_cert {}: names no node (it needs a DNS SAN with the node id, or a URI SAN eliop2p://node/<id>)",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("p2p.tls_key {}: {e}", files.key.display()))?;
    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.ca)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("p2p.tls_ca {}: {e}", files.ca.display()))?;
    for c in cas {
        roots
            .add(c)
            .map_err(|e| format!("p2p.tls_ca {}: not a usable CA certificate: {e}", files.ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("p2p.tls_ca {}: no PEM certificate in it", files.ca.display()));
    }
    let roots = Arc::new(roots);
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("p2p.tls_ca {}: {e}", files.ca.display()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("p2p.tls_key {}: does not go with p2p.tls_cert: {e}", files.key.display()))?;
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterPeer { roots, provider }))
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("p2p.tls_key {}: does not go with p2p.tls_cert: {e}", files.key.display()))?;
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        identities,
        stamps: [&files.cert, &files.key, &files.ca].iter().map(|p| stamp(p)).collect(),
    })
}

impl std::fmt::Debug for P2pTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl P2pTls {
    /// Reads the files; an error names the key whose file is wrong.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let loaded = load(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(loaded),
            failed_stamps: Mutex::default(),
            failures: Mutex::default(),
            reloads: Default::default(),
        })
    }

    pub fn rollout(&self) -> bool {
        self.files.rollout
    }

    /// The identities this node's certificate names.
    pub fn identities(&self) -> Vec<String> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).identities.clone()
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).server.clone())
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.current.read().unwrap_or_else(|e| e.into_inner()).client.clone())
    }

    /// Reads the files again; on error the configuration in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        self.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Reloads when a file's modification time changed since the last load (or
    /// the last failed attempt).
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now: Vec<_> = [&self.files.cert, &self.files.key, &self.files.ca].iter().map(|p| stamp(p)).collect();
        if now == self.current.read().unwrap_or_else(|e| e.into_inner()).stamps
            || self.failed_stamps.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&now)
        {
            return None;
        }
        let r = self.reload();
        *self.failed_stamps.lock().unwrap_or_else(|e| e.into_inner()) = r.is_err().then_some(now);
        Some(r)
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn failed(&self, reason: &'static str) {
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    /// Handshake failures by reason: `expired`, `unknown_ca`, `no_certificate`,
    /// `wrong_identity`, `not_tls`, `refused_by_peer`, `other`.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The reasons `failed` counts under.
pub const REASONS: [&str; 8] = [
    "expired",
    "unknown_ca",
    "no_certificate",
    "wrong_identity",
    "not_tls",
    "refused_by_peer",
    "timeout",
    "other",
];

/// How often the certificate files' modification times are looked at.
pub const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the certificates when their files change or on SIGHUP, until
/// cancelled.
pub(crate) async fn watch(tls: Arc<P2pTls>, cancel: tokio_util::sync::CancellationToken) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_CHECK) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let result = if forced { Some(tls.reload()) } else { tls.reload_if_changed() };
        match result {
            Some(Ok(())) => tracing::info!(identities = ?tls.identities(), "P2P certificates reloaded"),
            Some(Err(e)) => tracing::warn!(error = %e, "P2P certificates not reloaded; the ones loaded before stay in force"),
            None => {}
        }
    }
}

/// Why a TLS handshake failed, from the error rustls gave (through the I/O error
/// tokio-rustls wraps it in).
pub(crate) fn reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return "other";
    };
    match inner {
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => "expired",
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature | CertificateError::BadEncoding,
        ) => "unknown_ca",
        Error::InvalidCertificate(CertificateError::Other(o)) if o.to_string().contains("names no node") => {
            "wrong_identity"
        }
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            "not_tls"
        }
        Error::AlertReceived(_) => "refused_by_peer",
        _ => "other",
    }
}

/// The dialer's check of a listener: a certificate of the cluster CA, valid now,
/// naming a node. The name the dialer passes is not an identity (it dials
/// addresses), so it is not compared.
#[derive(Debug)]
struct ClusterPeer {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct NoNode;

impl std::fmt::Display for NoNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the certificate names no node")
    }
}

impl std::error::Error for NoNode {}

impl ServerCertVerifier for ClusterPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if node_ids(end_entity).is_empty() {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(NoNode)),
            )));
        }
        Ok(ServerCertVerified::assertion())
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
