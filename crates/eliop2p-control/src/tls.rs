//! https on the control-plane listener (`control_plane.tls_cert`,
//! `control_plane.tls_key`, `control_plane.client_ca`): TLS handshakes run in
//! tasks of their own, with a deadline, so a client that never finishes one
//! holds up no other client. The files are read again when they change (checked
//! every 2 s) or on SIGHUP; new connections use them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS configuration from PEM files; with `client_ca`, clients may
/// present a certificate it issued, which then stands in for the bearer token
/// (see [`ClientCert`]). An error names the key.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("control_plane.tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("control_plane.tls_cert {}: no PEM certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("control_plane.tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("control_plane.client_ca {}: {e}", ca.display()))?;
            for c in cas {
                roots.add(c).map_err(|e| format!("control_plane.client_ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("control_plane.client_ca {}: no PEM certificate in it", ca.display()));
            }
            // Optional: a client without a certificate still may use the token.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("control_plane.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("control_plane.tls_key: does not go with control_plane.tls_cert: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Whether a connection's client presented a certificate of
/// `control_plane.client_ca` (the handshake verified its chain and validity), and
/// the nodes it names: such a client is authenticated without the bearer token,
/// and may change the state of those nodes only.
#[derive(Clone, Debug)]
pub struct ClientCert(pub Option<Arc<[String]>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientCert {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let leaf = stream.io().get_ref().1.peer_certificates().and_then(|c| c.first());
        ClientCert(leaf.map(|c| eliop2p_core::identity::node_ids(c).into()))
    }
}

/// The files of the control plane's https.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files; an error names the key whose file is wrong.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        server_config(&self.cert, &self.key, self.client_ca.as_deref())
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The configuration in force, replaced when the files change.
pub(crate) struct ServerTls {
    files: TlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Vec<Option<SystemTime>>)>,
    /// Handshakes that failed, by reason (see [`REASONS`]).
    pub(crate) failures: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    pub(crate) reloads: std::sync::atomic::AtomicU64,
}

/// Why handshakes fail, as `eliop2p_control_tls_handshake_failures_total` counts them.
pub(crate) const REASONS: [&str; 6] = ["expired", "unknown_ca", "bad_certificate", "not_tls", "timeout", "other"];

fn reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => "expired",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => "unknown_ca",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. }) => {
            "not_tls"
        }
        _ => "other",
    }
}

impl ServerTls {
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Self>, String> {
        let stamps = files.stamps();
        let cfg = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((cfg, stamps)),
            failures: Default::default(),
            reloads: Default::default(),
        }))
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Reloads when a file changed (or always, `forced`); a failed reload keeps
    /// the configuration in force.
    fn reload(&self, forced: bool) {
        let stamps = self.files.stamps();
        if !forced && stamps == self.current.read().unwrap_or_else(|e| e.into_inner()).1 {
            return;
        }
        match self.files.load() {
            Ok(cfg) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (cfg, stamps);
                self.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("control plane: TLS certificate reloaded");
            }
            Err(e) => {
                // Remember the stamps: one warning per change, not one per check.
                self.current.write().unwrap_or_else(|e| e.into_inner()).1 = stamps;
                tracing::warn!(error = %e, "control plane: TLS certificate not reloaded; the one loaded before stays in force");
            }
        }
    }

    /// Reloads on file changes and SIGHUP until cancelled.
    pub(crate) async fn watch(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let forced = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            self.reload(forced);
        }
    }
}

/// A listener whose connections are TLS sessions, for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    addr: std::net::SocketAddr,
    _accept: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, tls: Arc<ServerTls>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (tokio_rustls::TlsAcceptor::from(tls.config()), tx.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                            return;
                        }
                        Ok(Err(e)) => {
                            let why = reason(&e);
                            tracing::info!(%peer, reason = why, error = %e, "control plane: TLS handshake failed");
                            why
                        }
                        Err(_) => "timeout",
                    };
                    *tls.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
                });
            }
        });
        Ok(Self { rx, addr, _accept: accept })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._accept.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (the server is shutting down): wait forever,
            // graceful shutdown ends `serve`.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
