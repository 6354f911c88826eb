//! Object metadata cache: one HEAD per object per TTL, shared by concurrent requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eliop2p_core::ObjectKey;
use eliop2p_origin::{ObjectMeta, OriginClient, OriginError, OriginRequest};
use http::{Method, StatusCode};
use tokio::sync::OnceCell;

/// Why metadata could not be had.
#[derive(Clone, Debug)]
pub enum MetaError {
    /// The origin answered HEAD with this non-success status: the caller relays the
    /// client's own request so the client sees the origin's exact answer and body.
    Status(StatusCode),
    /// A 2xx without the ETag or Content-Length the cache needs.
    Unusable,
    Origin(Arc<str>),
}

impl From<&OriginError> for MetaError {
    fn from(e: &OriginError) -> Self {
        MetaError::Origin(e.to_string().into())
    }
}

struct Slot {
    cell: OnceCell<Result<Arc<ObjectMeta>, MetaError>>,
    born: Instant,
    /// The expired metadata this slot refreshes, and when it was learned: what
    /// stale-if-error may answer with while the origin cannot be asked.
    previous: Option<(Arc<ObjectMeta>, Instant)>,
}

pub struct MetaCache {
    slots: Mutex<HashMap<ObjectKey, Arc<Slot>>>,
    ttl: Duration,
    max_entries: usize,
    /// How long past `ttl` expired metadata may still answer when a refresh fails
    /// because the origin is unreachable or answers 5xx (0 = never).
    stale_if_error: Duration,
}

pub enum MetaLookup {
    Cached(Arc<ObjectMeta>),
    Fetched(Result<Arc<ObjectMeta>, MetaError>),
    /// The refresh failed (origin down or 5xx): expired metadata within
    /// `stale_if_error`, and its age.
    Stale(Arc<ObjectMeta>, Duration),
}

impl MetaCache {
    pub fn new(ttl: Duration, max_entries: usize, stale_if_error: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            ttl,
            max_entries,
            stale_if_error,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fresh metadata, from the cache or by one `fetch` shared with concurrent
    /// callers. `fetch` is told whether the object was known before (an expired
    /// entry): a refresh, for which a HEAD is cheapest.
    pub async fn get<F, Fut>(&self, key: &ObjectKey, fetch: F) -> MetaLookup
    where
        F: FnOnce(bool) -> Fut,
        Fut: std::future::Future<Output = Result<Arc<ObjectMeta>, MetaError>>,
    {
        let (slot, refresh) = {
            let mut slots = self.lock();
            match slots.get(key) {
                Some(s) if s.born.elapsed() < self.ttl => {
                    if let Some(Ok(meta)) = s.cell.get() {
                        return MetaLookup::Cached(meta.clone());
                    }
                    (s.clone(), false)
                }
                existing => {
                    let refresh = existing.is_some();
                    let previous = existing.and_then(|s| match s.cell.get() {
                        Some(Ok(m)) => Some((m.clone(), s.born)),
                        _ => s.previous.clone(),
                    });
                    if slots.len() >= self.max_entries {
                        let ttl = self.ttl;
                        slots.retain(|_, s| s.born.elapsed() < ttl);
                        if slots.len() >= self.max_entries {
                            slots.clear();
                        }
                    }
                    let s = Arc::new(Slot {
                        cell: OnceCell::new(),
                        born: Instant::now(),
                        previous,
                    });
                    slots.insert(key.clone(), s.clone());
                    (s, refresh)
                }
            }
        };
        let result = slot.cell.get_or_init(|| fetch(refresh)).await.clone();
        if let Err(e) = &result {
            // Failures are not cached: the next request asks again. The expired
            // metadata stays, for stale-if-error and the next refresh.
            let mut slots = self.lock();
            if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                match &slot.previous {
                    Some((m, born)) => {
                        let kept = Arc::new(Slot {
                            cell: OnceCell::new_with(Some(Ok(m.clone()))),
                            born: *born,
                            previous: None,
                        });
                        slots.insert(key.clone(), kept);
                    }
                    None => {
                        slots.remove(key);
                    }
                }
            }
            let origin_failed = match e {
                MetaError::Origin(_) => true,
                MetaError::Status(s) => s.is_server_error(),
                MetaError::Unusable => false,
            };
            if origin_failed
                && let Some((m, born)) = &slot.previous
                && born.elapsed() < self.ttl + self.stale_if_error
            {
                return MetaLookup::Stale(m.clone(), born.elapsed());
            }
        }
        MetaLookup::Fetched(result)
    }

    /// Metadata by HEAD.
    pub async fn head(
        origin: &OriginClient,
        key: &ObjectKey,
    ) -> Result<Arc<ObjectMeta>, MetaError> {
        let mut req = OriginRequest::new(Method::HEAD, &key.bucket, Some(&key.key));
        req.headers.insert(
            eliop2p_origin::CHECKSUM_MODE,
            http::HeaderValue::from_static("ENABLED"),
        );
        match origin.send(req).await {
            Err(e) => Err(MetaError::from(&e)),
            Ok(resp) if resp.status().is_success() => ObjectMeta::from_headers(resp.headers())
                .map(Arc::new)
                .ok_or(MetaError::Unusable),
            Ok(resp) => Err(MetaError::Status(resp.status())),
        }
    }

    /// What is known about an object, however old (passthrough re-validates every
    /// use with the origin).
    pub fn peek(&self, key: &ObjectKey) -> Option<Arc<ObjectMeta>> {
        let slot = self.lock().get(key)?.clone();
        slot.cell.get()?.as_ref().ok().cloned()
    }

    /// Records metadata the origin just sent (passthrough responses).
    pub fn put(&self, key: &ObjectKey, meta: Arc<ObjectMeta>) {
        let slot = Arc::new(Slot {
            cell: OnceCell::new_with(Some(Ok(meta))),
            born: Instant::now(),
            previous: None,
        });
        let mut slots = self.lock();
        if slots.len() >= self.max_entries {
            slots.clear();
        }
        slots.insert(key.clone(), slot);
    }

    /// Forgets an object (after a PUT or DELETE through the node, or an ETag change
    /// seen during a fill); returns what was cached.
    pub fn invalidate(&self, key: &ObjectKey) -> Option<Arc<ObjectMeta>> {
        let slot = self.lock().remove(key)?;
        slot.cell.get()?.as_ref().ok().cloned()
    }
}
