//! The embedded store (redb) behind the soft state: registrations, chunk holdings and
//! pending commands, so a restarted control plane answers at once. Writes go through
//! one task in order, several changes per transaction.

use std::path::Path;
use std::sync::Arc;

use eliop2p_cluster::api::{Command, PreheatJob, Register};
use eliop2p_core::ChunkId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::state::Op;

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Key: node id, 0x00, 32-byte chunk id. Value: chunk length.
const CHUNKS: TableDefinition<&[u8], u64> = TableDefinition::new("chunks");
/// Key: command id. Value: JSON `{node, command}`.
const COMMANDS: TableDefinition<u64, &[u8]> = TableDefinition::new("commands");
/// Key: job id. Value: the preheat job as JSON.
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("control-plane store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Every value of a table of JSON records; an unreadable record is skipped with a
/// warning naming `what`.
fn json_values<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    tx: &redb::ReadTransaction,
    table: TableDefinition<'_, K, &'static [u8]>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for row in tx
        .open_table(table)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (_, v) = row.map_err(db_err)?;
        match serde_json::from_slice::<T>(v.value()) {
            Ok(x) => out.push(x),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable {what} record"),
        }
    }
    Ok(out)
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredCommand {
    pub node: String,
    pub command: Command,
}

fn chunk_key(node: &str, id: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.len() + 33);
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `[node 0x00, node 0x01)`: every chunk key of a node.
fn node_range(node: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = node.as_bytes().to_vec();
    lo.push(0);
    let mut hi = node.as_bytes().to_vec();
    hi.push(1);
    (lo, hi)
}

pub struct Loaded {
    pub nodes: Vec<Register>,
    pub chunks: Vec<(String, ChunkId, u64)>,
    pub commands: Vec<(String, Command)>,
    pub jobs: Vec<PreheatJob>,
}

impl Loaded {
    pub fn log(&self, from: &str) {
        tracing::info!(
            nodes = self.nodes.len(),
            chunk_holdings = self.chunks.len(),
            commands = self.commands.len(),
            jobs = self.jobs.len(),
            "control-plane state loaded from {from}"
        );
    }
}

pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<(Self, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(db_err)?;
        let db = Database::create(dir.join("control-plane.redb")).map_err(db_err)?;
        {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(NODES).map_err(db_err)?;
            tx.open_table(CHUNKS).map_err(db_err)?;
            tx.open_table(COMMANDS).map_err(db_err)?;
            tx.open_table(JOBS).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        let mut loaded = Loaded {
            nodes: Vec::new(),
            chunks: Vec::new(),
            commands: Vec::new(),
            jobs: Vec::new(),
        };
        let tx = db.begin_read().map_err(db_err)?;
        loaded.nodes = json_values::<_, Register>(&tx, NODES, "node")?;
        for row in tx
            .open_table(CHUNKS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let k = k.value();
            if k.len() < 33 || k[k.len() - 33] != 0 {
                continue;
            }
            let node = String::from_utf8_lossy(&k[..k.len() - 33]).into_owned();
            let id: [u8; 32] = k[k.len() - 32..].try_into().expect("32 bytes");
            loaded
                .chunks
                .push((node, ChunkId::from_bytes(id), v.value()));
        }
        loaded.commands = json_values::<_, StoredCommand>(&tx, COMMANDS, "command")?
            .into_iter()
            .map(|c| (c.node, c.command))
            .collect();
        loaded.jobs = json_values::<_, PreheatJob>(&tx, JOBS, "preheat job")?;
        Ok((Self { db: Arc::new(db) }, loaded))
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut nodes = tx.open_table(NODES).map_err(db_err)?;
            let mut chunks = tx.open_table(CHUNKS).map_err(db_err)?;
            let mut commands = tx.open_table(COMMANDS).map_err(db_err)?;
            let mut jobs = tx.open_table(JOBS).map_err(db_err)?;
            for op in ops {
                match op {
                    Op::PutNode(r) => {
                        let v = serde_json::to_vec(r).expect("serializes");
                        nodes
                            .insert(r.node_id.as_str(), v.as_slice())
                            .map_err(db_err)?;
                    }
                    Op::DeleteNode(id) => {
                        nodes.remove(id.as_str()).map_err(db_err)?;
                        let (lo, hi) = node_range(id);
                        chunks
                            .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)
                            .map_err(db_err)?;
                    }
                    Op::ClearChunks(id) => {
                        let (lo, hi) = node_range(id);
                        chunks
                            .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)
                            .map_err(db_err)?;
                    }
                    Op::AddChunks(node, list) => {
                        for (c, len) in list {
                            chunks
                                .insert(chunk_key(node, c).as_slice(), *len)
                                .map_err(db_err)?;
                        }
                    }
                    Op::RemoveChunks(node, list) => {
                        for c in list {
                            chunks
                                .remove(chunk_key(node, c).as_slice())
                                .map_err(db_err)?;
                        }
                    }
                    Op::PutCommand(node, c) => {
                        let v = serde_json::to_vec(&StoredCommand {
                            node: node.clone(),
                            command: c.clone(),
                        })
                        .expect("serializes");
                        commands.insert(c.id, v.as_slice()).map_err(db_err)?;
                    }
                    Op::DeleteCommand(id) => {
                        commands.remove(*id).map_err(db_err)?;
                    }
                    Op::PutJob(j) => {
                        let v = serde_json::to_vec(j).expect("serializes");
                        jobs.insert(j.id, v.as_slice()).map_err(db_err)?;
                    }
                    Op::DeleteJob(id) => {
                        jobs.remove(*id).map_err(db_err)?;
                    }
                    // Soft: a restarted control plane waits for the next ones.
                    Op::Heartbeat(..) | Op::Demand(_) => {}
                }
            }
        }
        tx.commit().map_err(db_err)
    }
}

/// The writer task: applies queued changes in order, batching what queued up while
/// the previous transaction committed. Ends (after writing everything) when every
/// sender is dropped.
pub async fn writer(store: Store, mut rx: mpsc::UnboundedReceiver<Vec<Op>>) {
    let store = Arc::new(store);
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < 10_000 {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.apply(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "control-plane store write failed"),
            Err(e) => tracing::error!(error = %e, "control-plane store task failed"),
        }
    }
}
