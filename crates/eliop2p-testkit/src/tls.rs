//! A private CA and certificates it signs, made with the `openssl` command in a
//! temporary directory: a server certificate for 127.0.0.1 (https test origins)
//! and node certificates for mutual TLS between peers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A node's certificate files and the CA that issued them.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeCert {
    /// The P2P layer's TLS from these files.
    pub fn p2p_tls(&self, rollout: bool) -> anyhow::Result<std::sync::Arc<eliop2p_p2p::tls::P2pTls>> {
        let files = eliop2p_p2p::tls::TlsFiles { cert: self.cert.clone(), key: self.key.clone(), ca: self.ca.clone(), rollout };
        Ok(std::sync::Arc::new(eliop2p_p2p::tls::P2pTls::load(files).map_err(anyhow::Error::msg)?))
    }
}

pub struct TestCa {
    _dir: tempfile::TempDir,
    serial: std::sync::atomic::AtomicU32,
    /// The CA certificate (PEM): what `origin.ca_file` names.
    pub ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("the openssl command")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl TestCa {
    /// A CA and a certificate it signed for IP 127.0.0.1.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=eliop2p test CA"]);
        openssl(d, &ca)?;
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        openssl(d, &csr)?;
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            d,
            &[
                "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
            ],
        )?;
        Ok(Self {
            serial: Default::default(),
            ca_pem: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            _dir: dir,
        })
    }

    /// A node certificate (client and server use) naming `id` in a DNS SAN and a
    /// URI SAN `eliop2p://node/<id>`, with IP SAN 127.0.0.1, valid for two days,
    /// or already expired (`expired`: valid for 0 days from now, so expired a
    /// second later).
    pub fn node_cert(&self, id: &str, expired: bool) -> anyhow::Result<NodeCert> {
        let d = self._dir.path();
        let n = self.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (key, csr, ext, pem) = (
            format!("node{n}.key"),
            format!("node{n}.csr"),
            format!("node{n}.cnf"),
            format!("node{n}.pem"),
        );
        let mut req = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=eliop2p node"]);
        openssl(d, &req)?;
        std::fs::write(
            d.join(&ext),
            format!(
                "subjectAltName=DNS:{id},URI:eliop2p://node/{id},IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )?;
        let days = if expired { "0" } else { "2" };
        openssl(
            d,
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", &pem, "-days", days, "-extfile", &ext,
            ],
        )?;
        Ok(NodeCert { cert: d.join(pem), key: d.join(key), ca: self.ca_pem.clone() })
    }

    /// The server certificate for 127.0.0.1 and its key (PEM files).
    pub fn server_files(&self) -> (PathBuf, PathBuf) {
        (self.cert.clone(), self.key.clone())
    }

    /// The server side: the certificate for 127.0.0.1.
    pub fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&self.cert)?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.key)?;
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}
