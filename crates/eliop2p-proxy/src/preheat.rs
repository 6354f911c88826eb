//! Executing a preheat command: list the prefix at the origin (or take the one
//! key), then read every object through this node's read path (`read::warm`), so the chunks
//! land in the cache exactly as a client read would put them there (cluster
//! single flight included: nodes preheating together read each chunk from the
//! origin once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eliop2p_cluster::api::{PreheatProgress, PreheatSpec};
use eliop2p_core::ObjectKey;
use eliop2p_origin::{ListError, OriginRequest};
use http::Method;

use crate::read::WarmError;
use crate::config::AuthMode;
use crate::state::ProxyState;

/// Objects per preheat command at most.
const MAX_OBJECTS: usize = 100_000;

async fn list(state: &ProxyState, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
    state
        .origin_for(Some(bucket))
        .list_keys(bucket, prefix, MAX_OBJECTS)
        .await
        .map_err(|e| match e {
            ListError::TooMany(n) => format!(
                "more than {n} objects under s3://{bucket}/{prefix}: preheat a narrower prefix"
            ),
            e => format!("listing s3://{bucket}/{prefix}: {e}"),
        })
}

/// Reads one object through the cache (`read::warm`); returns its size.
async fn warm(state: &Arc<ProxyState>, bucket: &str, key: &str) -> Result<u64, String> {
    let what = format!("s3://{bucket}/{key}");
    match state.reader.warm(&ObjectKey::new(bucket, key)).await {
        Ok(n) => Ok(n),
        Err(WarmError::Meta(e)) => Err(format!("{what}: {e}")),
        Err(WarmError::Fill(e)) => Err(format!("{what}: {e}")),
        Err(WarmError::NotCacheable) => {
            // The metadata lookup hands the origin's own answer to clients; say what it was.
            let head = OriginRequest::new(Method::HEAD, bucket, Some(key));
            match state.origin_for(Some(bucket)).send(head).await {
                Ok(r) if !r.status().is_success() => {
                    Err(format!("{what}: origin answered {}", r.status()))
                }
                Ok(_) => Err(format!("{what}: not cacheable by this node")),
                Err(e) => Err(format!("{what}: {e}")),
            }
        }
    }
}

/// Runs one preheat command; `report` is called with progress now and then.
pub(crate) async fn run<F, Fut>(
    state: &Arc<ProxyState>,
    spec: &PreheatSpec,
    report: F,
) -> Result<PreheatProgress, (String, PreheatProgress)>
where
    F: Fn(PreheatProgress) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut p = PreheatProgress::default();
    if state.auth_for(Some(&spec.bucket)) == AuthMode::Passthrough {
        return Err((
            format!(
                "bucket {} is in passthrough auth mode: the node holds no credentials to read it on its own",
                spec.bucket
            ),
            p,
        ));
    }
    let keys = if spec.recursive {
        list(state, &spec.bucket, &spec.key)
            .await
            .map_err(|e| (e, p.clone()))?
    } else {
        vec![spec.key.clone()]
    };
    p.objects_total = keys.len() as u64;
    report(p.clone()).await;
    let mut last = Instant::now();
    for key in keys {
        match warm(state, &spec.bucket, &key).await {
            Ok(n) => {
                p.objects_done += 1;
                p.bytes_done += n;
            }
            Err(e) => return Err((e, p)),
        }
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            report(p.clone()).await;
        }
    }
    Ok(p)
}
