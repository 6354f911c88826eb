//! A network bed: hosts in Linux network namespaces, each with one NIC (a veth) of
//! finite speed capped by `tc tbf` in both directions, joined by a bridge that lives
//! in a namespace of its own. Nothing is added to the caller's namespace: every
//! address (10.77.0.0/16) exists only inside namespaces the bed made, so two beds
//! (two tests at once) never see each other. Dropping the bed deletes every
//! namespace it made, which removes its links and qdiscs too, also when a test
//! fails half-way; the namespaces of a process killed by a signal are removed by
//! the next bed made on the machine. Needs root and iproute2.
//!
//! Sockets are made inside a host's namespace by a thread that enters it
//! (`setns`), so an in-process server or client takes part in the bed like a
//! process started with `ip netns exec` does.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};

/// One host's NIC: rate in bits per second for each direction, optional one-way
/// delay (needs the kernel's `sch_netem`), and its MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub rate_bps: u64,
    pub delay_ms: u32,
    /// Bytes; 1500 is Ethernet's default, 9000 the jumbo frames of most
    /// data-centre networks (AWS uses 9001 inside a VPC). The bed's cost on the
    /// machine that runs it is per packet: at 1500, 16 hosts at 100 Mbit/s kept
    /// both cores of a 2-core machine busy on the kernel's side alone.
    pub mtu: u32,
    /// Bytes the switch queues on its port towards this host (its share of the
    /// switch's packet buffer). When many peers send to one host at once
    /// (incast), what exceeds it is dropped; see `Link::mbit` for the default.
    pub switch_buffer: u64,
    /// The host's default TCP congestion control (its namespace's
    /// `net.ipv4.tcp_congestion_control`); `None` = what a new namespace
    /// inherits, this machine's own default.
    pub congestion: Option<&'static str>,
}

impl Link {
    pub fn mbit(rate: u64) -> Self {
        Self {
            rate_bps: rate * 1_000_000,
            delay_ms: 0,
            mtu: 1500,
            // A port's share of a shared-buffer data-centre switch. With 20 ms
            // at the rate instead (125 KB at 50 Mbit/s, 14 jumbo frames, fewer
            // than the smallest windows of the flows converging on one port),
            // incast drops and retransmission timeouts made the bed's p99
            // (16 hosts at 50 Mbit/s) 1.34x ideal against 1.27-1.31x.
            switch_buffer: 1 << 20,
            congestion: None,
        }
    }

    pub fn with_congestion(self, congestion: Option<&'static str>) -> Self {
        Self { congestion, ..self }
    }

    pub fn with_mtu(self, mtu: u32) -> Self {
        Self { mtu, ..self }
    }

    pub fn with_switch_buffer(self, bytes: u64) -> Self {
        Self { switch_buffer: bytes, ..self }
    }
}

pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
}

pub struct NetBed {
    switch: String,
    pub hosts: Vec<Host>,
}

/// Whether this process can build a bed (root, `ip` and `tc` present).
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the network bed needs root".into());
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("the network bed needs `{tool}` (Debian package iproute2)"));
        }
    }
    Ok(())
}

/// For a test: whether the bed can be built here. When it cannot, the test is
/// skipped (this says why on stderr), unless `ELIOP2P_TEST_NETNS` is set (`scripts/test`
/// sets it when run as root): then a missing capability fails the test.
pub fn available_or_skip(what: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(e) => {
            assert!(std::env::var("ELIOP2P_TEST_NETNS").is_err(), "ELIOP2P_TEST_NETNS is set but {e}");
            eprintln!("skipping {what}: {e}");
            false
        }
    }
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

static NEXT_BED: AtomicU32 = AtomicU32::new(0);

/// Deletes namespaces left by beds of processes that no longer exist (a bench
/// stopped by a signal runs no destructor). Bed names are `e2p<pid>x<n>...`.
fn remove_stale_beds() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name
            .strip_prefix("e2p")
            .and_then(|r| r.split('x').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

impl NetBed {
    /// Makes one host per link, all on one bridge.
    pub fn create(links: &[Link]) -> anyhow::Result<Self> {
        available().map_err(anyhow::Error::msg)?;
        remove_stale_beds();
        if links.len() > 250 * 250 {
            bail!("too many hosts");
        }
        let tag = format!(
            "e2p{}x{}",
            std::process::id(),
            NEXT_BED.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{tag}sw");
        run(&["ip", "netns", "add", &switch])?;
        let mut bed = Self {
            switch,
            hosts: Vec::new(),
        };
        let sw = bed.switch.clone();
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for (i, link) in links.iter().enumerate() {
            let ns = format!("{tag}h{i}");
            run(&["ip", "netns", "add", &ns])?;
            if let Some(cc) = link.congestion {
                run(&["ip", "netns", "exec", &ns, "sysctl", "-qw", &format!("net.ipv4.tcp_congestion_control={cc}")])
                    .with_context(|| format!("host {i}: congestion control {cc}"))?;
            }
            let addr = Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250 + 2) as u8);
            bed.hosts.push(Host {
                ns: ns.clone(),
                addr,
            });
            let port = format!("p{i}");
            let mtu = link.mtu.to_string();
            run(&[
                "ip", "link", "add", "name", "eth0", "mtu", &mtu, "address", &host_mac(i), "netns", &ns,
                "type", "veth", "peer", "name", &port, "mtu", &mtu, "netns", &sw,
            ])?;
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"])?;
            run(&["ip", "-n", &sw, "link", "set", &port, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
            // Upload: the host's own NIC; download: the switch port towards it.
            shape(&ns, "eth0", *link, None)?;
            shape(&sw, &port, *link, Some(link.switch_buffer))?;
        }
        // Every host knows every other's hardware address from the start (a
        // permanent neighbour entry). The kernel keeps one neighbour table for
        // all namespaces, of `net.ipv4.neigh.default.gc_thresh3` entries (1024
        // by default), and a bed of n hosts that all talk needs n(n-1): past 32
        // hosts, ARP failed for whichever pairs came last (the origin, for half
        // of a 32-node bed's nodes). Permanent entries are outside that count.
        let batch = tempfile::NamedTempFile::new()?;
        for (i, h) in bed.hosts.iter().enumerate() {
            let mut lines = String::new();
            for (j, other) in bed.hosts.iter().enumerate() {
                if i != j {
                    lines.push_str(&format!("neigh replace {} lladdr {} dev eth0 nud permanent\n", other.addr, host_mac(j)));
                }
            }
            std::fs::write(batch.path(), lines)?;
            run(&["ip", "-n", &h.ns, "-batch", &batch.path().to_string_lossy()])?;
        }
        Ok(bed)
    }

    pub fn addr(&self, host: usize) -> Ipv4Addr {
        self.hosts[host].addr
    }

    /// Packets dropped by the shapers so far: (hosts' uplinks, switch ports).
    pub fn qdisc_drops(&self) -> (u64, u64) {
        // "Sent N bytes M pkt (dropped D, overlimits ...": the root qdisc's line.
        let (up, down) = self.probe().shaper_stats("(dropped ", ',');
        (up.iter().sum(), down.iter().sum())
    }

    /// What a sampler thread needs to read the bed's queues and connections
    /// while a run goes on.
    pub fn probe(&self) -> BedProbe {
        BedProbe { switch: self.switch.clone(), hosts: self.hosts.iter().map(|h| h.ns.clone()).collect() }
    }

    /// `program` run inside a host's namespace.
    pub fn command(&self, host: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[host].ns]).arg(program);
        c
    }

    /// Runs `f` on a thread inside a host's namespace (sockets it makes stay there).
    pub fn within<T: Send>(&self, host: usize, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/var/run/netns/{}", self.hosts[host].ns);
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a namespace fd only changes this thread's network
                // namespace; the thread ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns into {path}: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {path} panicked"))?
        })
    }

    /// A tokio listener on `host`'s address (port 0 picks one).
    pub fn listen(&self, host: usize, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
        let addr = SocketAddr::from((self.addr(host), port));
        let l = self.within(host, || std::net::TcpListener::bind(addr))??;
        l.set_nonblocking(true)?;
        Ok(tokio::net::TcpListener::from_std(l)?)
    }

    /// A tokio connection from inside `host` to `to`.
    pub fn connect(&self, host: usize, to: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
        let s = self.within(host, || std::net::TcpStream::connect(to))??;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        Ok(tokio::net::TcpStream::from_std(s)?)
    }
}

/// The number after `key` (up to `end`) in `dev`'s `tc -s qdisc` text, in
/// namespace `ns`; 0 when absent.
fn shaper_stat(ns: &str, dev: &str, key: &str, end: char) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.split(key)
        .nth(1)
        .and_then(|r| r.split(end).next())
        .and_then(|d| d.trim().trim_end_matches('b').parse().ok())
        .unwrap_or(0)
}

/// Reads the bed's shapers and TCP connections from any thread (diagnosis: where
/// the queues are, and the round trips a swarm's own traffic makes).
pub struct BedProbe {
    switch: String,
    hosts: Vec<String>,
}

impl BedProbe {
    /// One number of every shaper's `tc -s qdisc` text, the one after `key` up
    /// to `end`: per host, (its uplink, the switch port towards it).
    fn shaper_stats(&self, key: &str, end: char) -> (Vec<u64>, Vec<u64>) {
        let up = self.hosts.iter().map(|ns| shaper_stat(ns, "eth0", key, end)).collect();
        let down = (0..self.hosts.len()).map(|i| shaper_stat(&self.switch, &format!("p{i}"), key, end)).collect();
        (up, down)
    }

    /// Bytes a host's uplink has sent since the bed was made.
    pub fn uplink_sent(&self, host: usize) -> u64 {
        // " Sent 18877526 bytes 5358 pkt (dropped ...": the root qdisc's line.
        shaper_stat(&self.hosts[host], "eth0", "Sent ", ' ')
    }

    /// Bytes queued now: per host, (its uplink, the switch port towards it).
    pub fn backlogs(&self) -> (Vec<u64>, Vec<u64>) {
        // "backlog 123456b 14p requeues 0": the root qdisc's line.
        self.shaper_stats("backlog ", ' ')
    }

    /// Smoothed round-trip times (ms) of a host's established TCP connections,
    /// from `ss -tin`.
    pub fn tcp_rtts(&self, host: usize) -> Vec<f64> {
        let out = Command::new("ip").args(["netns", "exec", &self.hosts[host], "ss", "-tin", "state", "established"]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        text.split_whitespace()
            .filter_map(|w| w.strip_prefix("rtt:"))
            .filter_map(|r| r.split('/').next()?.parse().ok())
            .collect()
    }
}

/// Host `i`'s hardware address (locally administered, unicast).
fn host_mac(i: usize) -> String {
    format!("02:77:00:00:{:02x}:{:02x}", i / 256, i % 256)
}

/// A host's NIC queue, in packets: the kernel's default `txqueuelen` for a
/// device, and what `pfifo_fast` (this machine's `net.core.default_qdisc`) or
/// netem hold by default.
const HOST_QUEUE_PACKETS: u64 = 1000;

/// Caps `dev` at the link's rate. A switch port (`queue` = its bytes of
/// buffer) drops what overflows it, as a switch does: those packets were on
/// the wire, and their senders recover them as losses. A host's NIC (`None`)
/// holds `HOST_QUEUE_PACKETS`: its flows' own TCP small queues keep it short,
/// as on a real host, and it never refuses a packet its own TCP hands it.
fn shape(ns: &str, dev: &str, link: Link, queue: Option<u64>) -> anyhow::Result<()> {
    let rate = format!("{}bit", link.rate_bps);
    // Burst: at least one timer tick's worth at the rate, and more than one GSO
    // packet (64 KiB). tbf cuts a packet larger than its bucket into MTU-sized
    // frames, each then run through veth, bridge and TCP on its own: with a
    // 50 KB bucket (100 Mbit/s) that made a 16-host bed CPU-bound on 2 cores,
    // and its finish times measured the machine (p99 1.55-2.23x ideal against
    // 1.33x with this bucket, same build).
    let burst = (link.rate_bps / 8 / 250).max(128 * 1024).to_string();
    // A host's queue was tbf's own, 20 ms at the rate (630 KB at 200 Mbit/s),
    // and it dropped the packets its host's TCP tried to queue beyond that. A
    // flow whose packet is dropped there, with none in flight, has nothing to
    // recover it but its probe timer, which backs off while the queue stays
    // full: with 16 flows on the origin's uplink (16 clients reading it
    // directly), some sat for 10 s or more and were then reset ("Connection
    // reset by peer"), and the bed's direct baseline failed.
    let limit = queue.unwrap_or(HOST_QUEUE_PACKETS * u64::from(link.mtu)).to_string();
    run(&[
        "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
        "rate", &rate, "burst", &burst, "limit", &limit,
    ])?;
    if link.delay_ms > 0 {
        // netem's queue stands in for the port's or the NIC's, in packets.
        let packets = queue.map_or(HOST_QUEUE_PACKETS, |b| (b / u64::from(link.mtu)).max(1)).to_string();
        run(&[
            "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
            "netem", "delay", &format!("{}ms", link.delay_ms), "limit", &packets,
        ])
        .context("link delay needs the kernel's sch_netem")?;
    }
    Ok(())
}

impl Drop for NetBed {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of every veth, and with it the peer.
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch]);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    use super::{Link, NetBed};

    /// Every host reaches every other, in a bed with more host pairs than the
    /// kernel's neighbour table holds. That table is one for all namespaces
    /// (`net.ipv4.neigh.default.gc_thresh3`, 1024 entries by default), and 33
    /// hosts that all talk to each other need 1,056: in a 32-node bed the nodes'
    /// mesh filled it ("neighbour: arp_cache: neighbor table overflow!"), and
    /// half the nodes could not resolve the origin for their first HEAD and
    /// answered their clients 502 after 20 s. The bed's permanent entries are
    /// outside that count.
    #[test]
    fn every_host_reaches_every_other_beyond_the_neighbour_table() {
        if !super::available_or_skip("the network bed") {
            return;
        }
        let thresh: usize = std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1024);
        // The fewest hosts whose pairs overflow the table, at most 64.
        let n = (2..=64).find(|n| n * (n - 1) > thresh + 16).unwrap_or(64);
        let bed = NetBed::create(&vec![Link::mbit(100); n]).unwrap();
        let listeners: Vec<TcpListener> =
            (0..n).map(|h| bed.within(h, || TcpListener::bind((bed.addr(h), 7000))).unwrap().unwrap()).collect();
        let failed: Vec<String> = std::thread::scope(|sc| {
            let bed = &bed;
            let hosts: Vec<_> = (0..n)
                .map(|h| {
                    sc.spawn(move || {
                        bed.within(h, move || {
                            (0..n)
                                .filter(|&o| o != h)
                                .filter_map(|o| {
                                    let to = SocketAddr::from((bed.addr(o), 7000));
                                    TcpStream::connect_timeout(&to, Duration::from_secs(2))
                                        .err()
                                        .map(|e| format!("{h} -> {o}: {e}"))
                                })
                                .collect::<Vec<_>>()
                        })
                        .unwrap()
                    })
                })
                .collect();
            hosts.into_iter().flat_map(|t| t.join().unwrap()).collect()
        });
        drop(listeners);
        assert!(failed.is_empty(), "{n} hosts, {} of {} connections failed: {:?}", failed.len(), n * (n - 1), &failed[..failed.len().min(5)]);
    }

    /// A host's NIC queues what its own TCP hands it instead of dropping it: 16
    /// flows leaving one host at once (16 clients reading one origin) all
    /// finish, and its uplink's shaper drops nothing. With tbf's own queue of
    /// 20 ms at the rate, the uplink dropped thousands of packets a run, and
    /// flows sat on their probe timers until reset (the direct baseline of a
    /// 16-node bed failed with "Connection reset by peer").
    #[test]
    fn a_hosts_nic_queues_its_own_flows_instead_of_dropping_them() {
        use std::io::{Read, Write};
        if !super::available_or_skip("the network bed") {
            return;
        }
        const FLOWS: usize = 16;
        const EACH: usize = 6 << 20;
        let bed = NetBed::create(&vec![Link::mbit(200).with_mtu(9000); FLOWS + 1]).unwrap();
        let listeners: Vec<TcpListener> =
            (1..=FLOWS).map(|h| bed.within(h, || TcpListener::bind((bed.addr(h), 0))).unwrap().unwrap()).collect();
        let senders: Vec<TcpStream> = listeners
            .iter()
            .map(|l| {
                let to = l.local_addr().unwrap();
                bed.within(0, move || TcpStream::connect_timeout(&to, Duration::from_secs(5))).unwrap().unwrap()
            })
            .collect();
        let received: Vec<std::io::Result<usize>> = std::thread::scope(|sc| {
            for mut s in senders {
                sc.spawn(move || {
                    let block = vec![7u8; 1 << 20];
                    for _ in 0..EACH >> 20 {
                        if s.write_all(&block).is_err() {
                            return;
                        }
                    }
                });
            }
            let readers: Vec<_> = listeners
                .iter()
                .map(|l| {
                    sc.spawn(move || {
                        let (mut c, _) = l.accept()?;
                        c.set_read_timeout(Some(Duration::from_secs(60)))?;
                        let (mut n, mut buf) = (0, vec![0u8; 1 << 16]);
                        while n < EACH {
                            match c.read(&mut buf)? {
                                0 => break,
                                k if buf[..k].iter().any(|&b| b != 7) => {
                                    return Err(std::io::Error::other(format!("a wrong byte within {n}..{}", n + k)));
                                }
                                k => n += k,
                            }
                        }
                        Ok(n)
                    })
                })
                .collect();
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let short: Vec<String> = received
            .iter()
            .enumerate()
            .filter(|(_, r)| !matches!(r, Ok(n) if *n == EACH))
            .map(|(i, r)| format!("flow {i}: {r:?}"))
            .collect();
        let (uplinks, _) = bed.qdisc_drops();
        assert!(short.is_empty(), "flows cut short: {short:?}");
        assert_eq!(uplinks, 0, "the hosts' own NICs dropped {uplinks} packets their TCP handed them");
    }
}
