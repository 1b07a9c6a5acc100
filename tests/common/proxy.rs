//! A TCP proxy in front of a server that cuts one connection at the worst moment: after the
//! server answered a command the client cannot yet know the answer of (see [`CuttingProxy`]).
//! Used to check that a change whose connection broke is found out, never guessed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A TCP proxy to Dovecot's plaintext port that cuts the connection once: after the client
/// sent a command containing `trigger` and the server answered it, the answer is dropped and
/// both sides are closed, so the client cannot know whether the server did it. Dropping the
/// proxy stops it.
pub struct CuttingProxy {
    pub port: u16,
    cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    pub fn start(server_port: u16, trigger: &'static [u8]) -> CuttingProxy {
        CuttingProxy::start_cutting(server_port, trigger, false)
    }

    /// Like [`CuttingProxy::start`], but the cut comes before the server gets the command:
    /// the bytes holding `trigger` (and whatever came in the same read) are never forwarded.
    pub fn start_before_server(server_port: u16, trigger: &'static [u8]) -> CuttingProxy {
        CuttingProxy::start_cutting(server_port, trigger, true)
    }

    fn start_cutting(server_port: u16, trigger: &'static [u8], before: bool) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (cuts2, stop2) = (cuts.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    return;
                };
                let cut = Arc::new(AtomicBool::new(false));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // client -> server: arm the cut when the trigger goes by.
                let (armed, flag, cuts_before) = (armed.clone(), cut.clone(), cuts2.clone());
                let mut seen: Vec<u8> = Vec::new();
                std::thread::spawn(move || {
                    pump(c2, s2, |data| {
                        seen.extend_from_slice(data);
                        if seen.len() > 4096 {
                            seen.drain(..seen.len() - 4096);
                        }
                        if armed.load(Ordering::SeqCst)
                            && seen.windows(trigger.len()).any(|w| w == trigger)
                        {
                            armed.store(false, Ordering::SeqCst);
                            if before {
                                cuts_before.fetch_add(1, Ordering::SeqCst);
                                return Pass::Cut;
                            }
                            flag.store(true, Ordering::SeqCst);
                        }
                        Pass::Forward
                    })
                });
                // server -> client: once armed, hold back what comes until a tagged completion
                // (a line starting with a tag) arrives, then cut instead of forwarding it.
                let cuts = cuts2.clone();
                let mut pending: Vec<u8> = Vec::new();
                std::thread::spawn(move || {
                    pump(server, client, |data| {
                        if !cut.load(Ordering::SeqCst) {
                            return Pass::Forward;
                        }
                        pending.extend_from_slice(data);
                        let tagged = pending.split(|&b| b == b'\n').any(|l| {
                            l.first().is_some_and(|c| c.is_ascii_alphabetic())
                                && l.windows(4).any(|w| w == b" OK " || w == b" NO ")
                        });
                        if tagged {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            Pass::Cut
                        } else {
                            Pass::Hold
                        }
                    })
                });
            }
        });
        CuttingProxy { port, cuts, stop }
    }

    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        // Wake the accept loop so that it sees the flag and ends.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What [`pump`] does with the bytes just read.
enum Pass {
    Forward,
    Hold,
    Cut,
}

/// Copies `from` to `to` until either side closes or `decide` says cut; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, mut decide: impl FnMut(&[u8]) -> Pass) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match decide(&buf[..n]) {
            Pass::Forward => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Pass::Hold => {}
            Pass::Cut => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
