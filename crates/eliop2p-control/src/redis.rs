//! The shared store on Redis (`control_plane.store = "redis"`): any number of
//! control-plane replicas keep the same state.
//!
//! - Every change a replica makes is written, in one MULTI, to the state keys (the
//!   snapshot a starting replica loads) and as one entry of a log (a stream) with
//!   a sequence number. Every replica follows the log and applies every entry, its
//!   own too (see `log.rs`), so all converge to the log's order.
//! - Nodes' records and chunk holdings expire when their node has been silent for
//!   [`node_ttl`]; commands and preheat jobs do not.
//! - One replica at a time plans (replication, evictions) under a lease key it
//!   renews every third of the lease; when it dies the lease expires and another
//!   takes it.
//! - When Redis does not answer, the replica answers 503 until it is back, then
//!   loads the snapshot afresh (an emptied Redis yields empty state: nodes then
//!   re-register with full reports on their next heartbeat's 404).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eliop2p_cluster::api::{PreheatJob, Register};
use eliop2p_core::ChunkId;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisResult, TlsCertificates, TlsMode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::state::{MAX_ID_TAG, Op};
use crate::store::{Loaded, StoredCommand};

#[derive(Clone, Debug, Default)]
pub struct RedisConfig {
    /// `redis[s]://[[user]:password@]host:port[/db]`; with `sentinels`, the host
    /// is the name of the master the sentinels monitor (as redis-rb reads it).
    pub url: String,
    /// Prefix of every key, so that clusters can share one Redis.
    pub prefix: String,
    /// How long the planning lease lasts without renewal.
    pub lease: Duration,
    /// Redis Sentinels (`host:port`) that say which server is the master; empty:
    /// `url` names the server itself.
    pub sentinels: Vec<String>,
    /// The sentinels' own password (`requirepass` in sentinel.conf), if any.
    pub sentinel_password: Option<String>,
    /// With `rediss://`: the CA (PEM) that signed the servers' certificates;
    /// `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// With `rediss://`: a client certificate and key (PEM), for servers that
    /// authenticate clients (`tls-auth-clients`, Redis's default).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

/// Checks a Redis URL's form (the config loader names the key). The URL may
/// hold a password, so the error does not repeat it.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err("must be a redis://[:password@]host:port[/db] URL (rediss:// for TLS)".into());
    }
    if url.contains('#') {
        // redis-rs reads `#insecure` as "do not verify the certificate".
        return Err("a fragment (#...) is not accepted: certificates are always verified (control_plane.redis_ca_file names a private CA)".into());
    }
    url.into_connection_info().map(drop).map_err(|e| e.to_string())
}

/// Checks a whole Redis configuration: the URL, the sentinels' addresses and the
/// TLS files (as the client would use them). The error names the part at fault
/// by its `control_plane` key: `redis_url`, `redis_sentinels` or `redis_tls_cert`.
pub fn check_redis_config(cfg: &RedisConfig) -> Result<(), (&'static str, String)> {
    Backend::new(cfg).map(drop)
}

/// Where a replica's connections go: one server, or whichever server the
/// sentinels name master at the time of connecting.
enum Backend {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Backend {
    fn new(cfg: &RedisConfig) -> Result<Self, (&'static str, String)> {
        let url = |e: String| ("redis_url", e);
        let tls_err = |e: redis::RedisError| ("redis_tls_cert", e.to_string());
        check_redis_url(&cfg.url).map_err(url)?;
        let info = cfg.url.as_str().into_connection_info().map_err(|e| url(e.to_string()))?;
        let tls = cfg.url.starts_with("rediss://");
        if !tls && (cfg.ca.is_some() || cfg.client_cert.is_some()) {
            return Err(url("a CA or a client certificate is set but the URL is not rediss://".into()));
        }
        let certs = (cfg.ca.is_some() || cfg.client_cert.is_some()).then(|| TlsCertificates {
            client_tls: cfg.client_cert.clone().map(|(client_cert, client_key)| ClientTlsConfig {
                client_cert,
                client_key,
            }),
            root_cert: cfg.ca.clone(),
        });
        if cfg.sentinels.is_empty() {
            let client = match certs {
                Some(c) => redis::Client::build_with_tls(info, c).map_err(tls_err),
                None => redis::Client::open(info).map_err(|e| url(e.to_string())),
            };
            return client.map(Self::Direct);
        }
        let master = match info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            _ => return Err(url("with sentinels, the URL's host is the master's name".into())),
        };
        let mut addrs = Vec::new();
        for s in &cfg.sentinels {
            let (host, port) = s
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
                .ok_or_else(|| ("redis_sentinels", format!("{s:?} is not host:port")))?;
            addrs.push(if tls {
                ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None }
            } else {
                ConnectionAddr::Tcp(host.to_owned(), port)
            });
        }
        let settings = info.redis_settings();
        let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
            .map_err(|e| ("redis_sentinels", e.to_string()))?
            .set_client_to_redis_db(settings.db());
        if let Some(u) = settings.username() {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = settings.password() {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(p) = &cfg.sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        if tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(c) = certs {
                b = b
                    .set_client_to_redis_certificates(c.clone())
                    .set_client_to_sentinel_certificates(c);
            }
        }
        b.build().map(|c| Self::Sentinel(tokio::sync::Mutex::new(c))).map_err(tls_err)
    }
}

/// Entries the log keeps (approximately): a replica further behind reloads.
const LOG_LEN: u64 = 100_000;
/// How long a follower's read waits for new entries.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Any other request to Redis.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// How long a silent node's record and holdings stay in Redis.
pub fn node_ttl(dead_after: Duration) -> Duration {
    (dead_after * 4).max(Duration::from_secs(60))
}

const APPEND: &str = "local s = redis.call('INCR', KEYS[1]) \
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[2], 's', s, 'ops', ARGV[3]) \
    return s";
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// The connection of a replica to Redis, and what the other tasks read of it.
pub(crate) struct Link {
    backend: Backend,
    cfg: RedisConfig,
    node_ttl_ms: u64,
    /// For writes and the lease; replaced on every reload.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// This replica's range of command and job ids (0 until the first connect).
    tag: AtomicU64,
    replica: Mutex<String>,
    available: AtomicBool,
    leader: AtomicBool,
}

/// A batch of changes for the writer, and whether Redis took it.
pub(crate) type Write = (Vec<Op>, Option<oneshot::Sender<bool>>);

/// Where a follower is: the last entry read.
pub(crate) struct Cursor {
    conn: MultiplexedConnection,
    id: String,
    seq: u64,
}

impl Link {
    pub(crate) fn new(cfg: RedisConfig, dead_after: Duration) -> Result<Self, String> {
        Ok(Self {
            backend: Backend::new(&cfg).map_err(|(key, e)| format!("control_plane.{key}: {e}"))?,
            node_ttl_ms: node_ttl(dead_after).as_millis() as u64,
            cfg,
            conn: Mutex::new(None),
            tag: AtomicU64::new(0),
            replica: Mutex::new(String::new()),
            available: AtomicBool::new(false),
            leader: AtomicBool::new(false),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.cfg.prefix)
    }

    pub(crate) fn available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    pub(crate) fn set_available(&self, up: bool) {
        if self.available.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!("control-plane store (redis) reachable; serving");
            } else {
                tracing::warn!("control-plane store (redis) unreachable; answering 503 until it is back");
                self.leader.store(false, Ordering::Release);
            }
        }
    }

    pub(crate) fn leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub(crate) fn tag(&self) -> u64 {
        self.tag.load(Ordering::Acquire)
    }

    fn replica(&self) -> String {
        self.replica.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn connect(&self, answer_within: Duration) -> RedisResult<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(answer_within));
        match &self.backend {
            Backend::Direct(c) => c.get_multiplexed_async_connection_with_config(&cfg).await,
            // Asks the sentinels which server is master now (and checks its ROLE).
            Backend::Sentinel(s) => s.lock().await.get_async_connection_with_config(&cfg).await,
        }
    }

    /// Connects afresh and loads the snapshot: the state to start from and where
    /// to follow the log from. The first time, also takes this replica's id range.
    pub(crate) async fn reload(&self) -> RedisResult<(Loaded, Cursor)> {
        let mut conn = self.connect(ANSWER_WITHIN).await?;
        let follow = self.connect(READ_BLOCK + ANSWER_WITHIN).await?;
        if self.tag() == 0 {
            let n: u64 = redis::cmd("INCR")
                .arg(self.key("replicas"))
                .query_async(&mut conn)
                .await?;
            let tag = (n - 1) % MAX_ID_TAG + 1;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            *self.replica.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("{tag}-{}-{nanos:x}", std::process::id());
            self.tag.store(tag, Ordering::Release);
        }
        // Where the log stands, then the keys: entries after the cursor that the
        // keys already hold are applied again, which changes nothing.
        let (seq, last): (Option<u64>, StreamRangeReply) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(self.key("seq"))
            .cmd("XREVRANGE")
            .arg(self.key("log"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let cursor = Cursor {
            conn: follow,
            id: last.ids.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
            seq: seq.unwrap_or(0),
        };
        let loaded = self.snapshot(&mut conn).await?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        Ok((loaded, cursor))
    }

    async fn snapshot(&self, conn: &mut MultiplexedConnection) -> RedisResult<Loaded> {
        let mut keys: Vec<String> = Vec::new();
        let mut scan = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(scan)
                .arg("MATCH")
                .arg(self.key("node:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            keys.extend(batch);
            scan = next;
            if scan == 0 {
                break;
            }
        }
        let mut loaded = Loaded {
            nodes: Vec::new(),
            chunks: Vec::new(),
            commands: Vec::new(),
            jobs: Vec::new(),
        };
        for batch in keys.chunks(500) {
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(batch)
                .query_async(conn)
                .await?;
            let regs: Vec<Register> = values
                .into_iter()
                .flatten()
                .filter_map(|v| json_or_warn(&v, "node"))
                .collect();
            let mut p = redis::pipe();
            for r in &regs {
                p.cmd("HGETALL").arg(self.key(&format!("chunks:{}", r.node_id)));
            }
            let held: Vec<Vec<(String, u64)>> = p.query_async(conn).await?;
            for (r, held) in regs.iter().zip(held) {
                loaded.chunks.extend(
                    held.into_iter()
                        .filter_map(|(c, len)| Some((r.node_id.clone(), ChunkId::from_hex(&c)?, len))),
                );
            }
            loaded.nodes.extend(regs);
        }
        let commands: Vec<(u64, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.key("commands"))
            .query_async(conn)
            .await?;
        loaded.commands = commands
            .iter()
            .filter_map(|(_, v)| json_or_warn::<StoredCommand>(v, "command"))
            .map(|c| (c.node, c.command))
            .collect();
        let jobs: Vec<(u64, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.key("jobs"))
            .query_async(conn)
            .await?;
        loaded.jobs = jobs
            .iter()
            .filter_map(|(_, v)| json_or_warn::<PreheatJob>(v, "preheat job"))
            .collect();
        Ok(loaded)
    }

    /// Writes a batch of changes: the state keys and one log entry, atomically.
    async fn append(&self, ops: &[Op]) -> RedisResult<()> {
        let Some(mut conn) = self.conn() else {
            return Err(redis::RedisError::from(std::io::Error::other("not connected")));
        };
        let ttl = self.node_ttl_ms;
        let node = |id: &str| self.key(&format!("node:{id}"));
        let chunks = |id: &str| self.key(&format!("chunks:{id}"));
        let mut p = redis::pipe();
        p.atomic();
        for op in ops {
            match op {
                Op::PutNode(r) => {
                    let v = serde_json::to_vec(r).expect("serializes");
                    p.cmd("SET").arg(node(&r.node_id)).arg(v).arg("PX").arg(ttl).ignore();
                    p.cmd("PEXPIRE").arg(chunks(&r.node_id)).arg(ttl).ignore();
                }
                Op::DeleteNode(id) => {
                    p.cmd("DEL").arg(node(id)).arg(chunks(id)).ignore();
                }
                Op::ClearChunks(id) => {
                    p.cmd("DEL").arg(chunks(id)).ignore();
                }
                Op::AddChunks(id, list) => {
                    let mut c = redis::cmd("HSET");
                    c.arg(chunks(id));
                    for (chunk, len) in list {
                        c.arg(chunk.to_hex()).arg(*len);
                    }
                    p.add_command(c).ignore();
                    p.cmd("PEXPIRE").arg(chunks(id)).arg(ttl).ignore();
                }
                Op::RemoveChunks(id, list) => {
                    let mut c = redis::cmd("HDEL");
                    c.arg(chunks(id));
                    for chunk in list {
                        c.arg(chunk.to_hex());
                    }
                    p.add_command(c).ignore();
                }
                Op::PutCommand(id, cmd) => {
                    let v = serde_json::to_vec(&StoredCommand {
                        node: id.clone(),
                        command: cmd.clone(),
                    })
                    .expect("serializes");
                    p.cmd("HSET").arg(self.key("commands")).arg(cmd.id).arg(v).ignore();
                }
                Op::DeleteCommand(cmd) => {
                    p.cmd("HDEL").arg(self.key("commands")).arg(*cmd).ignore();
                }
                Op::PutJob(j) => {
                    let v = serde_json::to_vec(j).expect("serializes");
                    p.cmd("HSET").arg(self.key("jobs")).arg(j.id).arg(v).ignore();
                }
                Op::DeleteJob(id) => {
                    p.cmd("HDEL").arg(self.key("jobs")).arg(*id).ignore();
                }
                Op::Heartbeat(id, _) => {
                    p.cmd("PEXPIRE").arg(node(id)).arg(ttl).ignore();
                    p.cmd("PEXPIRE").arg(chunks(id)).arg(ttl).ignore();
                }
                Op::Demand(_) => {}
            }
        }
        p.cmd("EVAL")
            .arg(APPEND)
            .arg(2)
            .arg(self.key("seq"))
            .arg(self.key("log"))
            .arg(LOG_LEN)
            .arg(self.replica())
            .arg(serde_json::to_vec(ops).expect("serializes"))
            .ignore();
        p.query_async::<()>(&mut conn).await
    }

    /// Takes the planning lease, or renews it; whether this replica holds it.
    async fn try_lead(&self) -> RedisResult<bool> {
        let Some(mut conn) = self.conn() else {
            return Ok(false);
        };
        let lease = self.key("lease");
        let ms = self.cfg.lease.as_millis() as u64;
        if self.leader() {
            let kept: u64 = redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&lease)
                .arg(self.replica())
                .arg(ms)
                .query_async(&mut conn)
                .await?;
            Ok(kept == 1)
        } else {
            let got: Option<String> = redis::cmd("SET")
                .arg(&lease)
                .arg(self.replica())
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query_async(&mut conn)
                .await?;
            Ok(got.is_some())
        }
    }

    async fn release(&self) {
        if !self.leader.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Some(mut conn) = self.conn() {
            let r: RedisResult<u64> = redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.key("lease"))
                .arg(self.replica())
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not release the planning lease; it expires");
            }
        }
    }

    /// The next entries after the cursor: `Ok(None)` when the log has a gap (it
    /// was trimmed past the cursor, or Redis lost it): reload.
    pub(crate) async fn read(&self, cur: &mut Cursor) -> RedisResult<Option<Vec<Op>>> {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.key("log"))
            .arg(&cur.id)
            .query_async(&mut cur.conn)
            .await?;
        let mut ops = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let seq: Option<u64> = entry.get("s");
            if seq != Some(cur.seq + 1) {
                tracing::warn!(
                    expected = cur.seq + 1,
                    got = ?seq,
                    "the control-plane log skipped entries; loading the state afresh"
                );
                return Ok(None);
            }
            cur.seq += 1;
            cur.id = entry.id.clone();
            let raw: Vec<u8> = entry.get("ops").unwrap_or_default();
            match serde_json::from_slice::<Vec<Op>>(&raw) {
                Ok(batch) => ops.extend(batch),
                Err(e) => tracing::warn!(error = %e, id = %entry.id, "skipping an unreadable log entry"),
            }
        }
        Ok(Some(ops))
    }
}

fn json_or_warn<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Option<T> {
    serde_json::from_slice(v)
        .inspect_err(|e| tracing::warn!(error = %e, "skipping an unreadable {what} record in redis"))
        .ok()
}

/// The writer task: writes queued batches in order (what queued up while the last
/// one was written goes in one MULTI) and tells each sender whether Redis took
/// it. Ends when every sender is dropped.
pub(crate) async fn writer(link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = rx.recv().await {
        let mut ops = first.0;
        let mut waiters: Vec<oneshot::Sender<bool>> = first.1.into_iter().collect();
        while ops.len() < 5_000 {
            match rx.try_recv() {
                Ok((more, w)) => {
                    ops.extend(more);
                    waiters.extend(w);
                }
                Err(_) => break,
            }
        }
        let ok = link.available()
            && match link.append(&ops).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, changes = ops.len(), "control-plane store (redis) write failed");
                    link.set_available(false);
                    false
                }
            };
        for w in waiters {
            let _ = w.send(ok);
        }
    }
}

/// The lease task: every third of the lease, takes or renews it. Gives it up on
/// cancellation, so that another replica plans at once.
pub(crate) async fn hold_lease(link: Arc<Link>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(link.cfg.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let lead = link.available()
            && match link.try_lead().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "planning lease: redis did not answer");
                    false
                }
            };
        if link.leader.swap(lead, Ordering::AcqRel) != lead {
            tracing::info!(replica = %link.replica(), planning = lead, "planning lease changed hands");
        }
    }
    link.release().await;
}

/// What a replica's follower did, for the metrics.
#[derive(Default)]
pub(crate) struct FollowStats {
    /// Snapshots loaded (the first, and one after every outage or gap).
    pub reloads: AtomicU64,
    /// Changes applied from the log.
    pub applied: AtomicU64,
}
