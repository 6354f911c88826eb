//! Socket options of the P2P connections: the bound on unsent bytes
//! (`TCP_NOTSENT_LOWAT`) and the TCP congestion control (`p2p.tcp_congestion`);
//! and, for the proxy's client connections too, no paced congestion control
//! between two ends on one host ([`unpace_local`]).

use std::os::fd::{AsRawFd, RawFd};

use tokio::net::TcpStream;

/// Unsent bytes a peer connection may queue in the kernel. Without a bound the
/// socket buffer grows to megabytes: an upload slot would be released long before
/// its piece is on the wire, and every piece would crawl behind all the others. With
/// it, the slots bound what this uplink is sending, and a piece takes one piece
/// time per hop (what makes a swarm fast).
/// (The simulator frees an upload slot with this much of its piece left.)
pub const NOTSENT_LOWAT: u64 = 128 * 1024;

/// Longest congestion control name the kernel takes (`TCP_CA_NAME_MAX` less
/// its terminating zero).
const NAME_MAX: usize = 15;

/// Bounds the unsent bytes of a peer connection ([`NOTSENT_LOWAT`]).
pub(crate) fn bound_unsent(stream: &TcpStream) {
    let v = NOTSENT_LOWAT as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int, on a
    // socket this function borrows.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_NOTSENT_LOWAT not set");
    }
}

/// Sets the congestion control of a peer connection (`p2p.tcp_congestion`);
/// `None` keeps the host's default, except between two ends on one host
/// ([`unpace_local`]). [`check_congestion`] vetted the name at start, so a
/// failure here is only logged.
pub(crate) fn set_congestion(stream: &TcpStream, name: Option<&str>) {
    match name {
        Some(name) => {
            if let Err(e) = set_congestion_fd(stream.as_raw_fd(), name) {
                tracing::warn!(error = %e, name, "p2p.tcp_congestion not set on a peer connection");
            }
        }
        None => unpace_local(stream),
    }
}

/// A connection whose two ends are on this host (a client beside its node, or
/// nodes sharing a machine) is given reno when the host's default is bbr. BBR
/// paces every send: over loopback, where there is no queue to keep short, that
/// halves what a connection carries (this machine: 3.4-4.5 GB/s with bbr against
/// 7.2-9.9 GB/s with reno or cubic, one connection of 1 GiB; a node MISS from one
/// peer, 0.9 against 1.05 GB/s). "Local" is a peer at a loopback address or at
/// this end's own address (a client reading its node over the host's address, as
/// on the network bed). reno is the one congestion control every process may set.
pub fn unpace_local(stream: &TcpStream) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    if !(peer.ip().is_loopback() || peer.ip() == local.ip()) {
        return;
    }
    if congestion(stream).is_ok_and(|cc| cc == "bbr")
        && let Err(e) = set_congestion_fd(stream.as_raw_fd(), "reno")
    {
        tracing::debug!(error = %e, "a local connection keeps bbr");
    }
}

/// Gives a socket (a listener's accepted connections inherit it) the
/// congestion control `name`.
pub fn set_socket_congestion(socket: &impl AsRawFd, name: &str) -> std::io::Result<()> {
    set_congestion_fd(socket.as_raw_fd(), name)
}

#[cfg(not(target_os = "linux"))]
fn set_congestion_fd(_fd: RawFd, _name: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "TCP_CONGESTION is Linux's"))
}

#[cfg(target_os = "linux")]
fn set_congestion_fd(fd: RawFd, name: &str) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `name.len()` bytes from a live string slice, on a
    // socket the caller holds open.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The congestion control a connection uses.
#[cfg(not(target_os = "linux"))]
pub fn congestion(_stream: &impl AsRawFd) -> std::io::Result<String> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "TCP_CONGESTION is Linux's"))
}

/// The congestion control a connection uses.
#[cfg(target_os = "linux")]
pub fn congestion(stream: &impl AsRawFd) -> std::io::Result<String> {
    let mut buf = [0u8; NAME_MAX + 1];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`, which lives.
    let r = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CONGESTION, buf.as_mut_ptr().cast(), &mut len)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let name = &buf[..(len as usize).min(buf.len())];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// This host's default congestion control (`net.ipv4.tcp_congestion_control`
/// of this process's network namespace), "unknown" where it cannot be read.
pub fn host_congestion() -> String {
    ipv4_sysctl("tcp_congestion_control").unwrap_or_else(|| "unknown".to_owned())
}

fn ipv4_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{key}")).ok().map(|s| s.trim().to_owned())
}

/// Whether this process can give its peer connections the congestion control
/// `name`: tried on a socket of its own, so that a name the kernel lacks, or one
/// it keeps from unprivileged processes, is a config error at start rather than
/// a warning per connection. The error says which and what the host offers.
pub fn check_congestion(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_MAX || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{name:?} is not a congestion control name (letters, digits and '_', at most {NAME_MAX})"));
    }
    let sysctl = |key: &str| ipv4_sysctl(key).unwrap_or_else(|| "(unknown)".to_owned());
    let socket = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("no socket to try {name:?} on: {e}"))?;
    match set_congestion_fd(socket.as_raw_fd(), name) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(format!(
            "{name:?} is not a congestion control of this kernel (net.ipv4.tcp_available_congestion_control: {})",
            sysctl("tcp_available_congestion_control")
        )),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(format!(
            "{name:?} is not allowed to this process: net.ipv4.tcp_allowed_congestion_control lists {}, and others need CAP_NET_ADMIN",
            sysctl("tcp_allowed_congestion_control")
        )),
        Err(e) => Err(format!("{name:?} not set on a socket: {e}")),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_connection_takes_the_congestion_control_asked() {
        // reno is built into every Linux kernel and allowed to every process.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        set_congestion(&server, Some("reno"));
        assert_eq!(congestion(&server).unwrap(), "reno");
    }

    #[tokio::test]
    async fn a_local_connection_is_not_paced_by_bbr() {
        if check_congestion("bbr").is_err() {
            eprintln!("this kernel has no bbr: nothing to undo");
            return;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        set_congestion(&server, Some("bbr"));
        set_congestion(&client, Some("cubic").filter(|c| check_congestion(c).is_ok()).or(Some("reno")));
        let client_cc = congestion(&client).unwrap();
        unpace_local(&server);
        unpace_local(&client);
        assert_eq!(congestion(&server).unwrap(), "reno", "bbr between two ends on one host");
        assert_eq!(congestion(&client).unwrap(), client_cc, "only bbr is replaced");
    }

    #[test]
    fn a_name_the_kernel_lacks_or_a_malformed_one_is_refused() {
        assert_eq!(check_congestion("reno"), Ok(()));
        let e = check_congestion("nosuchcc").unwrap_err();
        assert!(e.contains("not a congestion control of this kernel") && e.contains("reno"), "{e}");
        for bad in ["", "cubic;rm", "a_name_longer_than_15"] {
            let e = check_congestion(bad).unwrap_err();
            assert!(e.contains("is not a congestion control name"), "{bad:?}: {e}");
        }
    }
}
