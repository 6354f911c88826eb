//! Kernel pacing of a node's uploads under `p2p.max_upload_rate`.
//!
//! The token bucket (`limit`) bounds the bytes the node hands its sockets, a
//! quarter second at a time; each socket then sends as fast as TCP lets it, and
//! the connections that hold a piece's bytes together overrun the NIC. On the
//! network bed (16 hosts at 200 Mbit/s, 64 MiB) each host's NIC queue held p90
//! ~450 KiB, 18 ms at the rate, and the nodes' round trips were 20 ms p50: a
//! piece request and a have-announcement waited behind that queue at every hop.
//!
//! With a rate set, the connections writing a piece's frame or holding bytes
//! not yet sent share it equally, each as its socket's `SO_MAX_PACING_RATE`:
//! the kernel spaces their packets so that together they send at the rate, not
//! in bursts above it. The shares are set again whenever a piece's frame starts
//! or ends on any upload connection (every few ms on a busy uplink), counting
//! the sockets with unsent bytes then (`SIOCOUTQNSD`): a piece's tail already
//! sent and not yet acked takes no share. Only the connections that sent since
//! are looked at, not every open one. On the bed the NIC queue fell to p90 65-124 KiB and round
//! trips to 8-10 ms p50; the 64 MiB row's p99 from 1.34-1.36x to 1.29-1.30x,
//! the 512 MiB row's from 1.16-1.19x to 1.14-1.15x (deployment.md).
//!
//! Linux only; elsewhere a rate set keeps only the token bucket.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

/// The upload connections of one node and the rate they share.
pub(crate) struct Pacer {
    /// Bytes per second.
    rate: u64,
    /// The sockets that may be sending: (socket, writing a piece's frame now).
    /// Only those: a node may hold a thousand connections, and each share is set
    /// at every piece's start and end; one found with nothing left to send and no
    /// frame being written leaves the list until its next frame.
    sending: Mutex<Vec<(RawFd, bool)>>,
}

impl Pacer {
    /// `None` when the uploads are not limited (`rate` 0).
    pub(crate) fn new(rate: u64) -> Option<Arc<Self>> {
        (rate > 0).then(|| Arc::new(Self { rate, sending: Mutex::default() }))
    }

    /// Paces `fd`'s uploads until the returned guard drops, which must be before
    /// the socket closes (`Paced` holds no reference to it).
    pub(crate) fn register(self: &Arc<Self>, fd: RawFd) -> Paced {
        Paced { pacer: self.clone(), fd }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(RawFd, bool)>> {
        self.sending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `fd` as writing a frame or not, then shares the rate among the
    /// sockets writing one or holding bytes not yet sent; the others keep their
    /// rate until they send again.
    fn reshare(&self, fd: RawFd, writing: bool) {
        let mut list = self.lock();
        match list.iter_mut().find(|(f, _)| *f == fd) {
            Some(e) => e.1 = writing,
            None if writing => list.push((fd, true)),
            None => {}
        }
        list.retain(|&(f, writing)| writing || unsent(f) > 0);
        if let Some(share) = share(self.rate, list.len()) {
            for &(f, _) in list.iter() {
                set_max_pacing_rate(f, share);
            }
        }
    }
}

/// Each of `sending` sockets' share of `rate` (at least 1 byte/s: 0 would be
/// no limit); `None` when none sends.
fn share(rate: u64, sending: usize) -> Option<u64> {
    (sending > 0).then(|| (rate / sending as u64).max(1))
}

/// One upload connection's socket, paced while this lives.
pub(crate) struct Paced {
    pacer: Arc<Pacer>,
    fd: RawFd,
}

impl Paced {
    /// A piece's frame is about to be written on this connection.
    pub(crate) fn starting(&self) {
        self.pacer.reshare(self.fd, true);
    }

    /// A piece's frame is in the socket (or its write failed).
    pub(crate) fn written(&self) {
        self.pacer.reshare(self.fd, false);
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.pacer.lock().retain(|&(f, _)| f != self.fd);
    }
}

/// Bytes in `fd`'s send queue not yet sent (0 when unknown).
#[cfg(target_os = "linux")]
fn unsent(fd: RawFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one c_int to the pointer given; `fd` is a
    // registered socket, open while its `Paced` lives (the caller holds the list).
    let r = unsafe { libc::ioctl(fd, libc::SIOCOUTQNSD as _, &mut n as *mut libc::c_int) };
    if r == 0 { n } else { 0 }
}

#[cfg(not(target_os = "linux"))]
fn unsent(_fd: RawFd) -> i32 {
    0
}

#[cfg(target_os = "linux")]
fn set_max_pacing_rate(fd: RawFd, bytes_per_sec: u64) {
    // SAFETY: setsockopt reads `size_of::<u64>()` bytes from a live u64 (the
    // kernel takes a 64-bit rate since 4.20, a 32-bit one before); `fd` as above.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&bytes_per_sec as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "SO_MAX_PACING_RATE not set");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_max_pacing_rate(_fd: RawFd, _bytes_per_sec: u64) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn max_pacing_rate(fd: RawFd) -> u64 {
        let mut v: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a live u64.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, (&mut v as *mut u64).cast(), &mut len) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        v
    }

    /// A connected pair on loopback whose receiver does not read.
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Fills `s`'s send queue until bytes stay unsent (the peer does not read).
    fn clog(s: &mut std::net::TcpStream) {
        s.set_nonblocking(true).unwrap();
        let block = vec![7u8; 1 << 16];
        while unsent(s.as_raw_fd()) == 0 {
            let _ = s.write(&block);
        }
    }

    #[test]
    fn the_sockets_with_unsent_bytes_share_the_rate() {
        let pacer = Pacer::new(8_000_000).unwrap();
        let (mut a, _ra) = pair();
        let (mut b, _rb) = pair();
        let (c, _rc) = pair();
        let (pa, pb, pc) = (pacer.register(a.as_raw_fd()), pacer.register(b.as_raw_fd()), pacer.register(c.as_raw_fd()));
        // A socket never paced has no limit.
        assert_eq!(max_pacing_rate(a.as_raw_fd()), u64::MAX);
        // `a` starts alone: the whole rate.
        pa.starting();
        assert_eq!(max_pacing_rate(a.as_raw_fd()), 8_000_000);
        clog(&mut a);
        // Its frame is in the socket, with bytes not yet sent: it stays listed.
        pa.written();
        assert_eq!(pacer.lock().as_slice(), &[(a.as_raw_fd(), false)]);
        // `b` starts while `a` holds unsent bytes: half each; idle `c` is left alone.
        pb.starting();
        assert_eq!(max_pacing_rate(a.as_raw_fd()), 4_000_000);
        assert_eq!(max_pacing_rate(b.as_raw_fd()), 4_000_000);
        assert_eq!(max_pacing_rate(c.as_raw_fd()), u64::MAX);
        // `b` wrote its frame and the kernel sent it all: it leaves the list, and
        // `a`, still holding unsent bytes, has the whole rate again.
        pb.written();
        assert_eq!(max_pacing_rate(a.as_raw_fd()), 8_000_000);
        assert_eq!(pacer.lock().as_slice(), &[(a.as_raw_fd(), false)]);
        // `b` and `c` start frames while `a` still sends: a third each.
        pb.starting();
        clog(&mut b);
        pc.starting();
        for s in [&a, &b, &c] {
            assert_eq!(max_pacing_rate(s.as_raw_fd()), 8_000_000 / 3);
        }
        // A dropped guard leaves the list; `c`, its frame written and sent, too:
        // `a` has the whole rate.
        drop(pb);
        pc.written();
        assert_eq!(max_pacing_rate(a.as_raw_fd()), 8_000_000);
        assert_eq!(pacer.lock().as_slice(), &[(a.as_raw_fd(), false)]);
        drop((pa, pc));
        assert!(pacer.lock().is_empty());
    }

    #[test]
    fn no_rate_no_pacer_and_a_share_is_never_zero() {
        assert!(Pacer::new(0).is_none());
        assert_eq!(share(10, 0), None);
        assert_eq!(share(10, 3), Some(3));
        assert_eq!(share(2, 5), Some(1));
    }
}
