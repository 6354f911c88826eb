//! The node's side of the cluster: reading chunks from the origin for peers when
//! this node is a chunk's owner (fetch-through).

use std::sync::{Arc, Weak};

use eliop2p_cache::Lookup;
use eliop2p_core::{ByteRange, ChunkId, ETag, ObjectKey};
use eliop2p_origin::ObjectMeta;
use eliop2p_p2p::{FetchRequest, Fetcher};

use crate::get::{chunk_id, run_fill};
use crate::server::ProxyState;

/// Starts origin fills asked for by peers. The chunk id must be the one this node
/// derives from the request with its own origin and chunk size, so a peer can only
/// ask for chunks of the origin this node serves.
pub(crate) struct NodeFetcher(pub Weak<ProxyState>);

impl Fetcher for NodeFetcher {
    fn fetch(&self, id: ChunkId, req: &FetchRequest) -> Result<(), String> {
        let state = self.0.upgrade().ok_or("node shutting down")?;
        let chunk_size = state.cfg.chunk_size;
        if req.chunk_size != chunk_size {
            return Err(format!(
                "chunk size {} differs from this node's {chunk_size}",
                req.chunk_size
            ));
        }
        let start = req.index.saturating_mul(chunk_size);
        if start >= req.object_size {
            return Err(format!("chunk {} is beyond the object", req.index));
        }
        let key = ObjectKey::new(req.bucket.clone(), req.key.clone());
        let meta = ObjectMeta {
            etag: ETag::new(&req.etag),
            size: req.object_size,
            last_modified: None,
            headers: Vec::new(),
        };
        if chunk_id(&state, &key, &meta, req.index) != id {
            return Err("chunk id does not match this node's origin".into());
        }
        let range = ByteRange::new(start, (start + chunk_size).min(req.object_size));
        if let Lookup::Leader(writer) = state.cache.lookup(id, range.len()) {
            state.fills.spawn(run_fill(
                state.clone(),
                writer,
                key,
                Arc::new(meta),
                range,
                true,
            ));
        }
        Ok(())
    }
}
