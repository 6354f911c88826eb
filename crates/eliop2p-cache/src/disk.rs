//! The disk tier's storage: one file per chunk, named only from its `ChunkId`, under
//! `<root>/chunks/<2 hex>/<64 hex>.chunk`, written to `<root>/tmp` first, fsynced and
//! renamed, so a crash never leaves a partial chunk under a real name.
//!
//! File layout (integers big-endian; see ARCHITECTURE.md):
//!
//! ```text
//! magic "ELIOCHK1" | header_len u32 | chunk_id [32] | data_len u64 | sha256 [32]
//! | piece_size u32 | num_pieces u32 | piece sha256 [32] x num_pieces
//! | header sha256 [32] (over everything before it) | data
//! ```
//!
//! Every piece (1 MiB) is verified against its hash on every read (a byte that
//! rots on the disk, or is changed by anyone, after an earlier read is caught
//! too); a whole-chunk read verifies every piece and the chunk hash.
//! A mismatch, a bad header or a short file deletes the chunk and reports
//! `DiskError::Corrupt`, so the caller refetches. All methods block: call them from
//! `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use eliop2p_core::ChunkId;
use sha2::{Digest, Sha256};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"ELIOCHK2";
pub use crate::PIECE_SIZE;
/// Headers larger than this are corrupt (1 GiB chunks, the most `cache.chunk_size`
/// allows, of 256 KiB pieces need 128 KiB).
const MAX_HEADER: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("chunk not on disk")]
    NotFound,
    /// The chunk failed verification and was deleted: refetch it.
    #[error("corrupt chunk deleted: {0}")]
    Corrupt(String),
    #[error("disk I/O: {0}")]
    Io(#[from] io::Error),
}

/// A whole chunk read back and verified: data, piece hashes, chunk hash.
pub type VerifiedChunk = (Bytes, Vec<[u8; 32]>, [u8; 32]);

/// What the index keeps per chunk (from its header).
pub struct DiskEntry {
    pub len: u64,
    pub sha256: [u8; 32],
    header_len: u64,
    piece_size: u64,
    piece_hashes: Vec<[u8; 32]>,
}

/// Counts from opening a store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    pub chunks: u64,
    pub bytes: u64,
    pub temp_files_removed: u64,
    pub bad_files_removed: u64,
}

pub struct DiskStore {
    root: PathBuf,
    index: Mutex<HashMap<ChunkId, Arc<DiskEntry>>>,
    temp_seq: std::sync::atomic::AtomicU64,
}

fn piece_count(len: u64, piece_size: u64) -> usize {
    len.div_ceil(piece_size) as usize
}

fn encode_header(id: &ChunkId, len: u64, piece_hashes: &[[u8; 32]]) -> Vec<u8> {
    encode_header_with(id, len, piece_hashes, PIECE_SIZE)
}

fn encode_header_with(id: &ChunkId, len: u64, piece_hashes: &[[u8; 32]], piece_size: u64) -> Vec<u8> {
    let n = piece_count(len, piece_size);
    let sha256 = crate::chunk_root(piece_hashes);
    let header_len = 8 + 4 + 32 + 8 + 32 + 4 + 4 + 32 * n + 32;
    let mut h = Vec::with_capacity(header_len);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(header_len as u32).to_be_bytes());
    h.extend_from_slice(id.as_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&sha256);
    h.extend_from_slice(&(piece_size as u32).to_be_bytes());
    h.extend_from_slice(&(n as u32).to_be_bytes());
    for piece in piece_hashes {
        h.extend_from_slice(piece);
    }
    let hh = Sha256::digest(&h);
    h.extend_from_slice(&hh);
    debug_assert_eq!(h.len(), header_len);
    h
}

/// Parses and checks a header; `file_len` must match header + data exactly.
fn decode_header(buf: &[u8], expect_id: &ChunkId, file_len: u64) -> Result<DiskEntry, String> {
    let take = |at: usize, n: usize| {
        buf.get(at..at + n)
            .ok_or_else(|| "header truncated".to_owned())
    };
    if take(0, 8)? != MAGIC {
        return Err("bad magic".into());
    }
    let header_len = u32::from_be_bytes(take(8, 4)?.try_into().expect("4 bytes")) as usize;
    if !(96..=MAX_HEADER).contains(&header_len) || header_len > buf.len() {
        return Err(format!("bad header length {header_len}"));
    }
    let (body, hh) = buf[..header_len].split_at(header_len - 32);
    if Sha256::digest(body).as_slice() != hh {
        return Err("header checksum mismatch".into());
    }
    if take(12, 32)? != expect_id.as_bytes() {
        return Err("chunk id in header does not match file name".into());
    }
    let len = u64::from_be_bytes(take(44, 8)?.try_into().expect("8 bytes"));
    let sha256: [u8; 32] = take(52, 32)?.try_into().expect("32 bytes");
    let piece_size = u64::from(u32::from_be_bytes(
        take(84, 4)?.try_into().expect("4 bytes"),
    ));
    let n = u32::from_be_bytes(take(88, 4)?.try_into().expect("4 bytes")) as usize;
    if piece_size == 0 || n != piece_count(len, piece_size) || header_len != 92 + 32 * n + 32 {
        return Err("inconsistent piece table".into());
    }
    // Piece hashes are what peers check pieces against and what the chunk hash
    // is built from: a chunk cut in other pieces (1 MiB before 256 KiB) is
    // fetched again rather than served with hashes no peer can use.
    if piece_size != PIECE_SIZE {
        return Err(format!(
            "written with {piece_size}-byte pieces; this version uses {PIECE_SIZE}"
        ));
    }
    if file_len != header_len as u64 + len {
        return Err(format!(
            "file is {file_len} bytes, header says {}",
            header_len as u64 + len
        ));
    }
    let piece_hashes = (0..n)
        .map(|i| take(92 + 32 * i, 32).map(|s| s.try_into().expect("32 bytes")))
        .collect::<Result<_, _>>()?;
    Ok(DiskEntry {
        len,
        sha256,
        header_len: header_len as u64,
        piece_size,
        piece_hashes,
    })
}

impl DiskStore {
    /// Opens (creating) the store: removes leftover temp files, and rebuilds the index
    /// from headers only (no chunk data is read), deleting files with bad headers or
    /// wrong lengths.
    pub fn open(root: &Path) -> io::Result<(Self, OpenReport)> {
        let chunks = root.join("chunks");
        let tmp = root.join("tmp");
        fs::create_dir_all(&chunks)?;
        fs::create_dir_all(&tmp)?;
        let mut report = OpenReport::default();
        for e in fs::read_dir(&tmp)? {
            let e = e?;
            if fs::remove_file(e.path()).is_ok() {
                report.temp_files_removed += 1;
            }
        }
        let mut index = HashMap::new();
        for shard in fs::read_dir(&chunks)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(shard.path())? {
                let path = f?.path();
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".chunk"))
                    .and_then(ChunkId::from_hex);
                let Some(id) = id else {
                    let _ = fs::remove_file(&path);
                    report.bad_files_removed += 1;
                    continue;
                };
                match read_header(&path, &id) {
                    Ok(entry) => {
                        report.chunks += 1;
                        report.bytes += entry.len;
                        index.insert(id, Arc::new(entry));
                    }
                    Err(why) => {
                        tracing::warn!(chunk_id = %id, reason = %why, "removing unreadable chunk file");
                        let _ = fs::remove_file(&path);
                        report.bad_files_removed += 1;
                    }
                }
            }
        }
        let store = Self {
            root: root.to_owned(),
            index: Mutex::new(index),
            temp_seq: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((store, report))
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root
            .join("chunks")
            .join(&hex[..2])
            .join(format!("{hex}.chunk"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkId, Arc<DiskEntry>>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.lock().contains_key(id)
    }

    pub fn entry(&self, id: &ChunkId) -> Option<Arc<DiskEntry>> {
        self.lock().get(id).cloned()
    }

    /// The SHA-256 of piece `index` of a chunk, from its header.
    pub fn piece_hash(&self, id: &ChunkId, index: usize) -> Option<[u8; 32]> {
        self.entry(id)?.piece_hashes.get(index).copied()
    }

    pub fn ids(&self) -> Vec<(ChunkId, u64)> {
        self.lock().iter().map(|(id, e)| (*id, e.len)).collect()
    }

    /// Writes a chunk durably: temp file, fsync, rename, fsync of the directory.
    /// `piece_hashes` are those computed when the bytes were verified in memory.
    /// The chunk's bytes are `segments` in order.
    pub fn write<B: AsRef<[u8]>>(
        &self,
        id: &ChunkId,
        segments: &[B],
        piece_hashes: &[[u8; 32]],
    ) -> io::Result<()> {
        let len: u64 = segments.iter().map(|s| s.as_ref().len() as u64).sum();
        if piece_hashes.len() != piece_count(len, PIECE_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "piece hash count does not match the data",
            ));
        }
        let header = encode_header(id, len, piece_hashes);
        let final_path = self.path(id);
        let dir = final_path.parent().expect("sharded path has a parent");
        fs::create_dir_all(dir)?;
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}.{}.{seq}.tmp", id.to_hex(), std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            for s in segments {
                f.write_all(s.as_ref())?;
            }
            f.sync_all()?;
            fs::rename(&tmp, &final_path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let entry =
            decode_header(&header, id, header.len() as u64 + len).map_err(io::Error::other)?;
        self.lock().insert(*id, Arc::new(entry));
        Ok(())
    }

    pub fn remove(&self, id: &ChunkId) -> io::Result<bool> {
        let known = self.lock().remove(id).is_some();
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(known),
            Err(e) => Err(e),
        }
    }

    fn corrupt(&self, id: &ChunkId, why: String) -> DiskError {
        tracing::warn!(chunk_id = %id, reason = %why, "corrupt chunk on disk, deleting");
        let _ = self.remove(id);
        DiskError::Corrupt(why)
    }

    /// Asks the kernel to start reading `[start, end)` of a chunk into the page cache
    /// (`posix_fadvise(WILLNEED)`), so sequential reads overlap disk I/O with sending.
    /// Advisory: errors are ignored.
    pub fn prefetch(&self, id: &ChunkId, start: u64, end: u64) {
        use std::os::fd::AsRawFd;
        let Some(entry) = self.entry(id) else { return };
        let Ok(file) = File::open(self.path(id)) else {
            return;
        };
        let (off, len) = (entry.header_len + start, end.saturating_sub(start));
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is
        // valid for the lifetime of `file`.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                off as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Bytes `[start, end)` of a chunk. Reads the whole pieces covering the range
    /// and checks each against its hash, every time.
    pub fn read_range(&self, id: &ChunkId, start: u64, end: u64) -> Result<Bytes, DiskError> {
        let entry = self.entry(id).ok_or(DiskError::NotFound)?;
        if start > end || end > entry.len {
            return Err(DiskError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the chunk",
            )));
        }
        if start == end {
            return Ok(Bytes::new());
        }
        let file = match File::open(self.path(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.corrupt(id, "file vanished".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let ps = entry.piece_size;
        let first = (start / ps) as usize;
        let last = ((end - 1) / ps) as usize;
        let (read_start, read_end) = (first as u64 * ps, ((last as u64 + 1) * ps).min(entry.len));
        let mut buf = BytesMut::zeroed((read_end - read_start) as usize);
        if let Err(e) = file.read_exact_at(&mut buf, entry.header_len + read_start) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                self.corrupt(id, "file truncated".into())
            } else {
                e.into()
            });
        }
        for p in first..=last {
            let off = (p as u64 * ps - read_start) as usize;
            let piece = &buf[off..(off + ps as usize).min(buf.len())];
            if Sha256::digest(piece).as_slice() != entry.piece_hashes[p] {
                return Err(self.corrupt(id, format!("piece {p} hash mismatch")));
            }
        }
        let buf = buf.freeze();
        Ok(buf.slice((start - read_start) as usize..(end - read_start) as usize))
    }

    /// The whole chunk, every piece and the chunk hash verified (for promotion to
    /// memory and for sending to peers), with its piece hashes and chunk hash.
    pub fn read_verified(&self, id: &ChunkId) -> Result<VerifiedChunk, DiskError> {
        let entry = self.entry(id).ok_or(DiskError::NotFound)?;
        let mut file = File::open(self.path(id)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                self.corrupt(id, "file vanished".into())
            } else {
                e.into()
            }
        })?;
        let mut all = Vec::with_capacity((entry.header_len + entry.len) as usize);
        file.read_to_end(&mut all)?;
        if all.len() as u64 != entry.header_len + entry.len {
            return Err(self.corrupt(id, "file length changed".into()));
        }
        let data = Bytes::from(all).slice(entry.header_len as usize..);
        for (p, piece) in data.chunks(entry.piece_size as usize).enumerate() {
            if Sha256::digest(piece).as_slice() != entry.piece_hashes[p] {
                return Err(self.corrupt(id, format!("piece {p} hash mismatch")));
            }
        }
        if crate::chunk_root(&entry.piece_hashes) != entry.sha256 {
            return Err(self.corrupt(id, "chunk hash does not match its piece hashes".into()));
        }
        Ok((data, entry.piece_hashes.clone(), entry.sha256))
    }
}

fn read_header(path: &Path, id: &ChunkId) -> Result<DiskEntry, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let file_len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut fixed = [0u8; 12];
    f.read_exact(&mut fixed)
        .map_err(|_| "shorter than a header".to_owned())?;
    let header_len = u32::from_be_bytes(fixed[8..12].try_into().expect("4 bytes")) as usize;
    if !(96..=MAX_HEADER).contains(&header_len) {
        return Err(format!("bad header length {header_len}"));
    }
    let mut buf = vec![0u8; header_len];
    buf[..12].copy_from_slice(&fixed);
    f.read_exact(&mut buf[12..])
        .map_err(|_| "header truncated".to_owned())?;
    decode_header(&buf, id, file_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn put(store: &DiskStore, n: u8, d: &[u8]) -> ChunkId {
        let id = ChunkId::from_bytes([n; 32]);
        store.write(&id, &[d], &crate::hash_pieces(d).0).unwrap();
        id
    }

    /// Chunks written before pieces were 256 KiB carry 1 MiB piece hashes, which
    /// no peer can check a 256 KiB piece against: they are removed at open.
    #[test]
    fn chunks_of_another_piece_size_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStore::open(dir.path()).unwrap();
        let keep = put(&store, 1, &data(2 * PIECE_SIZE as usize));
        let d = data(3 << 20);
        let old = ChunkId::from_bytes([2; 32]);
        let hashes: Vec<[u8; 32]> = d.chunks(1 << 20).map(|p| Sha256::digest(p).into()).collect();
        let mut file = encode_header_with(&old, d.len() as u64, &hashes, 1 << 20);
        file.extend_from_slice(&d);
        let path = store.path(&old);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file).unwrap();
        drop(store);
        let (store, report) = DiskStore::open(dir.path()).unwrap();
        assert_eq!((report.chunks, report.bad_files_removed), (1, 1));
        assert!(store.contains(&keep));
        assert!(!store.contains(&old));
        assert!(!path.exists());
    }

    #[test]
    fn write_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStore::open(dir.path()).unwrap();
        let d = data(3 * PIECE_SIZE as usize + 100);
        let id = put(&store, 1, &d);
        assert_eq!(&store.read_range(&id, 5, 10).unwrap()[..], &d[5..10]);
        let hashes = crate::hash_pieces(&d).0;
        assert_eq!(store.piece_hash(&id, 3), Some(hashes[3]));
        assert_eq!(store.piece_hash(&id, 4), None);
        // Reopen: index rebuilt from headers; pieces verified again on first read.
        drop(store);
        std::fs::write(dir.path().join("tmp/leftover.tmp"), b"partial").unwrap();
        let (store, report) = DiskStore::open(dir.path()).unwrap();
        assert_eq!(
            report,
            OpenReport {
                chunks: 1,
                bytes: d.len() as u64,
                temp_files_removed: 1,
                bad_files_removed: 0
            }
        );
        let r = store
            .read_range(&id, PIECE_SIZE - 3, 2 * PIECE_SIZE + 7)
            .unwrap();
        assert_eq!(
            &r[..],
            &d[PIECE_SIZE as usize - 3..2 * PIECE_SIZE as usize + 7]
        );
        let (all, pieces, root) = store.read_verified(&id).unwrap();
        assert_eq!(&all[..], &d[..]);
        assert_eq!((pieces, root), crate::hash_pieces(&d));
        assert_eq!(store.read_range(&id, 0, 0).unwrap().len(), 0);
        assert!(store.read_range(&id, 0, d.len() as u64 + 1).is_err());
    }

    #[test]
    fn flipped_byte_is_detected_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(2 * PIECE_SIZE as usize);
        let id = {
            let (store, _) = DiskStore::open(dir.path()).unwrap();
            put(&store, 2, &d)
        };
        let path = {
            let (store, _) = DiskStore::open(dir.path()).unwrap();
            store.path(&id)
        };
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let (store, report) = DiskStore::open(dir.path()).unwrap();
        assert_eq!(report.chunks, 1, "headers alone look fine");
        // A read of the intact first piece succeeds; the damaged second piece fails.
        assert_eq!(&store.read_range(&id, 0, 4).unwrap()[..], &d[..4]);
        assert!(matches!(
            store.read_range(&id, PIECE_SIZE, PIECE_SIZE + 1),
            Err(DiskError::Corrupt(_))
        ));
        assert!(!store.contains(&id));
        assert!(!path.exists());
    }

    /// A byte changed in a chunk file after the piece was read once is still
    /// caught (before: a piece was verified only on its first read in a process).
    #[test]
    fn a_byte_flipped_after_a_read_is_caught_on_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStore::open(dir.path()).unwrap();
        let d = data(2 * PIECE_SIZE as usize);
        let id = put(&store, 3, &d);
        assert_eq!(&store.read_range(&id, 10, 20).unwrap()[..], &d[10..20]);
        let path = store.path(&id);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let at = std::fs::metadata(&path).unwrap().len() - 2 * PIECE_SIZE + 15;
        f.write_all_at(&[d[15] ^ 0x01], at).unwrap();
        assert!(matches!(store.read_range(&id, 10, 20), Err(DiskError::Corrupt(_))));
        assert!(!store.contains(&id), "the corrupt chunk is dropped");
    }

    #[test]
    fn truncated_and_foreign_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStore::open(dir.path()).unwrap();
        let id = put(&store, 3, &data(5000));
        let path = store.path(&id);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(4000).unwrap();
        std::fs::write(path.parent().unwrap().join("not-a-chunk"), b"x").unwrap();
        drop(store);
        let (store, report) = DiskStore::open(dir.path()).unwrap();
        assert_eq!((report.chunks, report.bad_files_removed), (0, 2));
        assert!(!store.contains(&id));
    }

    #[test]
    fn everything_stays_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStore::open(dir.path()).unwrap();
        let id = put(&store, 0xab, b"x");
        let p = store.path(&id);
        assert!(p.starts_with(dir.path().join("chunks").join("ab")));
        assert_eq!(p.file_name().unwrap().len(), 64 + ".chunk".len());
    }
}
