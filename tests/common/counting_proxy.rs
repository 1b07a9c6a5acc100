//! A TCP proxy that forwards everything and counts the bytes each way, so that a test can
//! tell how much crossed the wire (TLS records included: the proxy does not look inside).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// See the module documentation. Dropping it stops accepting; open connections go on.
pub struct CountingProxy {
    pub port: u16,
    from_server: Arc<AtomicU64>,
    to_server: Arc<AtomicU64>,
}

impl CountingProxy {
    /// A proxy on a random loopback port to `127.0.0.1:server_port`.
    pub fn start(server_port: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let from_server = Arc::new(AtomicU64::new(0));
        let to_server = Arc::new(AtomicU64::new(0));
        let (down, up) = (from_server.clone(), to_server.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = up.clone();
                std::thread::spawn(move || copy_counting(c2, s2, &up));
                let down = down.clone();
                std::thread::spawn(move || copy_counting(server, client, &down));
            }
        });
        CountingProxy {
            port,
            from_server,
            to_server,
        }
    }

    /// Bytes the server sent so far.
    pub fn bytes_down(&self) -> u64 {
        self.from_server.load(Ordering::SeqCst)
    }

    /// Bytes sent to the server so far.
    pub fn bytes_up(&self) -> u64 {
        self.to_server.load(Ordering::SeqCst)
    }
}

fn copy_counting(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
