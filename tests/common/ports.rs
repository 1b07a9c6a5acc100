//! Ports a test holds for as long as it needs them. A port found free and dropped can be taken
//! by any other process (other tests run beside this one) before the test uses it; a
//! [`RefusingPort`] keeps it: a socket bound to 127.0.0.1 but not listening, so that a
//! connect to it is refused (Linux answers with RST), and [`RefusingPort::listen`] turns it
//! into a listener on the same port when the test wants a server there. A server that must
//! bind a port itself gets a [`free_port`], and [`listener_belongs_to`] then tells whether the
//! listener there is really that server's.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A port on 127.0.0.1 that refuses connections, held until dropped or [`listen`]ed on.
///
/// [`listen`]: RefusingPort::listen
pub struct RefusingPort {
    fd: OwnedFd,
    pub port: u16,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        // SAFETY: plain socket calls on a descriptor this function owns, with a correctly
        // sized sockaddr_in.
        unsafe {
            let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(raw);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let sockaddr = (&mut addr as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
            let bound = libc::bind(fd.as_raw_fd(), sockaddr, len);
            assert_eq!(bound, 0, "bind 127.0.0.1:0: {}", io::Error::last_os_error());
            let named = libc::getsockname(fd.as_raw_fd(), sockaddr, &mut len);
            assert_eq!(named, 0, "getsockname: {}", io::Error::last_os_error());
            RefusingPort {
                fd,
                port: u16::from_be(addr.sin_port),
            }
        }
    }

    /// The same port, now accepting connections.
    pub fn listen(self) -> TcpListener {
        // SAFETY: listen(2) on the bound socket this value owns.
        let r = unsafe { libc::listen(self.fd.as_raw_fd(), 128) };
        assert_eq!(r, 0, "listen: {}", io::Error::last_os_error());
        TcpListener::from(self.fd)
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        RefusingPort::new()
    }
}

/// A port on 127.0.0.1 that was free a moment ago (nobody listens on it now). Only for a
/// server that must bind it itself; a test that wants a refusing port or a listener holds
/// one with [`RefusingPort`].
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether the socket listening on 127.0.0.1:`port` (or any address) belongs to `root` or a
/// process below it: a server started on a port picked free earlier may have lost it to
/// another process in between, and that one would answer as well.
pub fn listener_belongs_to(port: u16, root: u32) -> bool {
    let Some(inode) = listening_inode(port) else {
        return false;
    };
    let wanted = format!("socket:[{inode}]");
    let mut pids = vec![root];
    pids.extend(super::faults::descendants(root));
    pids.iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == wanted)
            })
    })
}

/// The inode of the IPv4 socket in LISTEN state on `port`, from /proc/net/tcp.
fn listening_inode(port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        let listening = *fields.get(3)? == LISTEN;
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}
