//! Passthrough: authorizations the origin recently gave, reused for the very same
//! signature (`proxy.auth_cache_ttl`).

use eliop2p_core::{ETag, ObjectKey};
use http::Method;

/// Authorizations recently given by the origin, per (credential proof, object,
/// method, version), kept `proxy.auth_cache_ttl` (0 = off).
pub(crate) struct AuthCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

impl AuthCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    fn slot(proof: &[u8; 32], key: &ObjectKey, method: &Method, etag: &ETag) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            &proof[..],
            key.bucket.as_bytes(),
            key.key.as_bytes(),
            method.as_str().as_bytes(),
            etag.as_str().as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    pub fn allowed(&self, proof: &[u8; 32], key: &ObjectKey, method: &Method, etag: &ETag) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let slot = Self::slot(proof, key, method, etag);
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.get(&slot).is_some_and(|t| t.elapsed() < self.ttl)
    }

    pub fn record(&self, proof: &[u8; 32], key: &ObjectKey, method: &Method, etag: &ETag) {
        if self.ttl.is_zero() {
            return;
        }
        let slot = Self::slot(proof, key, method, etag);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= 100_000 {
            let ttl = self.ttl;
            e.retain(|_, t| t.elapsed() < ttl);
        }
        e.insert(slot, std::time::Instant::now());
    }
}

