//! The disk tier's background tasks: write-behind with eviction, and verification of
//! chunks found on disk at start.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use eliop2p_core::ChunkId;
use tokio::sync::mpsc;

use super::{CacheShared, Chunk, ChunkEvent, VerifyOnStart, lock};
use crate::disk::DiskError;

/// The write-behind worker: writes queued chunks, then evicts the disk tier back
/// under its capacity and watermarks.
pub(super) async fn write_behind(
    shared: std::sync::Weak<CacheShared>,
    mut rx: mpsc::Receiver<(ChunkId, Arc<Chunk>)>,
) {
    while let Some((id, chunk)) = rx.recv().await {
        let Some(s) = shared.upgrade() else { break };
        s.stats.disk_queue_depth.fetch_sub(1, Relaxed);
        let Some(tier) = &s.disk else { break };
        let size = chunk.data.len();
        let admitted = lock(&tier.policy).admit(&id, size, tier.capacity);
        if admitted {
            // A full filesystem (other files grew, or the operator's disk_size
            // was optimistic) makes room by evicting the coldest chunks, then
            // writes again once: the tier keeps working at the size it can have.
            let mut retried = false;
            loop {
                let store = tier.store.clone();
                let c = chunk.clone();
                let written = tokio::task::spawn_blocking(move || {
                    store.write(&id, c.data.segments(), &c.piece_hashes)
                })
                .await;
                match written {
                    Ok(Ok(())) => {
                        s.stats.disk_writes.fetch_add(1, Relaxed);
                        let now = s.now();
                        let mut victims = Vec::new();
                        {
                            let mut p = lock(&tier.policy);
                            p.insert(id, size, 1, now);
                            let d = &s.stats.disk;
                            evict_to(&mut p, now, tier.capacity, &d.evictions_capacity, &mut victims);
                            let excess = s.cfg.watermarks.excess(p.bytes(), tier.capacity);
                            let target = p.bytes().saturating_sub(excess);
                            evict_to(&mut p, now, target, &d.evictions_watermark, &mut victims);
                        }
                        remove_from_disk(&s, victims).await;
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::StorageFull && !retried => {
                        retried = true;
                        let now = s.now();
                        let mut victims = Vec::new();
                        {
                            let mut p = lock(&tier.policy);
                            let target = p.bytes().saturating_sub(2 * size);
                            evict_to(&mut p, now, target, &s.stats.disk.evictions_full, &mut victims);
                        }
                        if victims.is_empty() {
                            s.log_disk_error(&e);
                        } else {
                            remove_from_disk(&s, victims).await;
                            continue;
                        }
                    }
                    Ok(Err(e)) => s.log_disk_error(&e),
                    Err(e) => tracing::warn!(error = %e, "disk write task failed"),
                }
                break;
            }
        } else {
            s.stats.not_admitted.fetch_add(1, Relaxed);
        }
        lock(&tier.pending).remove(&id);
        s.publish_sizes();
        s.recycle(chunk);
    }
}

/// Evicts the coldest chunks until the policy holds at most `target` bytes,
/// counting each in `counter`.
fn evict_to(
    p: &mut crate::policy::Policy,
    now: std::time::Duration,
    target: u64,
    counter: &std::sync::atomic::AtomicU64,
    victims: &mut Vec<ChunkId>,
) {
    while p.bytes() > target {
        let Some((v, _)) = p.evict_one(now) else {
            break;
        };
        victims.push(v);
        counter.fetch_add(1, Relaxed);
    }
}

/// Deletes evicted chunks' files and tells the cluster of those no tier holds now.
async fn remove_from_disk(s: &Arc<CacheShared>, victims: Vec<ChunkId>) {
    let Some(tier) = &s.disk else { return };
    if victims.is_empty() {
        return;
    }
    let store = tier.store.clone();
    let removed = victims.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for v in &removed {
            let _ = store.remove(v);
        }
    })
    .await;
    for v in victims {
        if s.get_memory(&v).is_none() {
            let _ = s.events_tx.send(ChunkEvent::Removed(v));
        }
    }
}

/// Background verification of chunks found on disk at start.
pub(super) async fn verify_on_start(shared: Arc<CacheShared>, mode: VerifyOnStart) {
    let Some(tier) = &shared.disk else { return };
    let mut ids: Vec<ChunkId> = tier.store.ids().into_iter().map(|(id, _)| id).collect();
    ids.sort();
    if mode == VerifyOnStart::Sample {
        // Ids are hashes: every k-th in sorted order is an unbiased sample.
        let step = (ids.len() / 100).max(1);
        let want = (ids.len() / 100).max(16);
        ids = ids.into_iter().step_by(step).take(want).collect();
    }
    for id in ids {
        let store = tier.store.clone();
        match tokio::task::spawn_blocking(move || store.read_verified(&id)).await {
            Ok(Ok(_)) => {
                shared.stats.verified_on_start.fetch_add(1, Relaxed);
            }
            Ok(Err(DiskError::Corrupt(_))) => shared.forget_disk(&id, true),
            Ok(Err(_)) | Err(_) => {}
        }
    }
    tracing::info!(
        verified = shared.stats.verified_on_start.load(Relaxed),
        corrupt = shared.stats.corrupt_chunks.load(Relaxed),
        "verification at start done"
    );
}
