//! TCP_NODELAY on the MySQL connections.
//!
//! sqlx 0.9.0 opens its TCP connections without TCP_NODELAY (a regression:
//! transact-rs/sqlx#4335, fixed upstream by #4336 but not yet released).
//! Nagle's algorithm then holds back the tail of any statement longer than
//! one TCP segment until the server's delayed ACK, about 40 ms later. Under
//! load the batch writer's multi-row INSERTs are that long, and each of them
//! stalled 40-48 ms (measured with `sqlx::query` debug logs at 1,500
//! transfers/s), which capped MariaDB at ~1,400 transfers/s with the machine
//! half idle.
//!
//! Until a release carries the fix, each new connection runs
//! [`set_nodelay_to_port`]: it looks through the process's open sockets and
//! sets TCP_NODELAY on every TCP socket whose peer is the database's port.
//! Setting it on a socket that already has it changes nothing.

/// Sets TCP_NODELAY on each open TCP socket of this process connected to
/// `peer_port`; returns how many it set.
#[cfg(target_os = "linux")]
pub(crate) fn set_nodelay_to_port(peer_port: u16) -> usize {
    use std::os::fd::BorrowedFd;

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only passed to getpeername/setsockopt.
        // If another thread closed it meanwhile they fail with EBADF or
        // ENOTSOCK; if its number was reused, the peer-port test below
        // still decides, so only a socket to the database is changed.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_database = socket
            .peer_addr()
            .ok()
            .and_then(|addr| addr.as_socket())
            .is_some_and(|addr| addr.port() == peer_port);
        if to_database && socket.set_tcp_nodelay(true).is_ok() {
            set += 1;
        }
    }
    set
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_nodelay_to_port(_peer_port: u16) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A connected socket gets TCP_NODELAY; one to another port does not.
    #[test]
    fn sets_nodelay_only_on_sockets_to_the_port() {
        let database = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = database.local_addr().expect("addr").port();
        let to_database = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let to_other =
            std::net::TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        assert!(!to_database.nodelay().expect("nodelay"));
        assert!(set_nodelay_to_port(port) >= 1);
        assert!(to_database.nodelay().expect("nodelay"));
        assert!(!to_other.nodelay().expect("nodelay"));
    }
}
