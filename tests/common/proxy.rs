//! A TCP proxy in front of a server that cuts connections at the worst moments, so that a
//! test can check that a change whose connection broke is found out, never guessed.
//!
//! - [`CuttingProxy::start`]: cut once, after the server answered the first command that
//!   contains a trigger (the client cannot know the answer).
//! - [`CuttingProxy::random`]: cut at random, seeded: each command line the client sends is,
//!   with a given probability, cut either right after it reached the server (the server may or
//!   may not have run it) or after the server answered it (the answer is dropped). Login-time
//!   commands are never cut, so that reconnecting always works. [`CuttingProxy::set_cutting`]
//!   pauses the cutting (for a test's checks).
//!
//! - [`HoldingProxy`]: holds back the server's answer to one command on one connection until
//!   the test lets it through (an answer that arrives after something else happened).
//!
//! Dropping the proxy stops it; connections already open keep pumping until either side
//! closes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// See the module documentation.
pub struct CuttingProxy {
    pub port: u16,
    cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    cutting: Arc<AtomicBool>,
}

/// When a connection is cut.
#[derive(Clone)]
enum Schedule {
    /// Once, at the first command containing the trigger: after its answer
    /// ([`Cut::AfterAnswer`]) or before the server gets it ([`Cut::Before`]).
    Trigger(&'static [u8], Cut),
    /// Each command with probability `per_mille`/1000, from a seeded generator shared by all
    /// connections (the n-th command the proxy sees gets the n-th draw).
    Random {
        rng: Arc<Mutex<u64>>,
        per_mille: u64,
    },
}

/// What the client->server side decided about the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    Not,
    /// Close both sides now (the command went to the server).
    Now,
    /// Drop the server's next tagged completion and close instead.
    AfterAnswer,
    /// Close both sides without forwarding the bytes that held the trigger.
    Before,
}

impl CuttingProxy {
    /// A proxy to `server_port` (plaintext) that cuts one connection once: after the client
    /// sent a command containing `trigger` and the server answered it, the answer is dropped
    /// and both sides are closed.
    pub fn start(server_port: u16, trigger: &'static [u8]) -> CuttingProxy {
        CuttingProxy::with(server_port, Schedule::Trigger(trigger, Cut::AfterAnswer))
    }

    /// Like [`CuttingProxy::start`], but the cut comes before the server gets the command:
    /// the bytes holding `trigger` (and whatever came in the same read) are never forwarded.
    pub fn start_before_server(server_port: u16, trigger: &'static [u8]) -> CuttingProxy {
        CuttingProxy::with(server_port, Schedule::Trigger(trigger, Cut::Before))
    }

    /// A proxy that cuts about `per_mille` of every thousand commands (not CAPABILITY,
    /// LOGIN, AUTHENTICATE, STARTTLS, ENABLE, ID, LOGOUT), half of them before the answer and
    /// half after, chosen by a generator seeded with `seed`.
    pub fn random(server_port: u16, seed: u64, per_mille: u64) -> CuttingProxy {
        CuttingProxy::with(
            server_port,
            Schedule::Random {
                rng: Arc::new(Mutex::new(seed | 1)),
                per_mille,
            },
        )
    }

    fn with(server_port: u16, schedule: Schedule) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cutting = Arc::new(AtomicBool::new(true));
        let (cuts2, stop2, cutting2) = (cuts.clone(), stop.clone(), cutting.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    return;
                };
                // 0: no cut; 1: cut now; 2: cut after the answer.
                let decision = Arc::new(AtomicU64::new(0));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (armed, flag, cuts_now) = (armed.clone(), decision.clone(), cuts2.clone());
                let (schedule, cutting) = (schedule.clone(), cutting2.clone());
                let mut lines = Lines::default();
                std::thread::spawn(move || {
                    pump(c2, s2, |data| {
                        let cut = match &schedule {
                            Schedule::Trigger(trigger, when) => {
                                lines.seen.extend_from_slice(data);
                                let seen = &mut lines.seen;
                                if seen.len() > 4096 {
                                    seen.drain(..seen.len() - 4096);
                                }
                                if armed.load(Ordering::SeqCst)
                                    && seen.windows(trigger.len()).any(|w| w == *trigger)
                                {
                                    armed.store(false, Ordering::SeqCst);
                                    *when
                                } else {
                                    Cut::Not
                                }
                            }
                            Schedule::Random { rng, per_mille } => {
                                let mut cut = Cut::Not;
                                for verb in lines.commands(data) {
                                    if cut != Cut::Not
                                        || !cutting.load(Ordering::SeqCst)
                                        || !cuttable(&verb)
                                    {
                                        continue;
                                    }
                                    let draw = next(&mut rng.lock().unwrap()) % 2000;
                                    if draw < *per_mille {
                                        cut = Cut::Now;
                                    } else if draw < 1000 + *per_mille && draw >= 1000 {
                                        cut = Cut::AfterAnswer;
                                    }
                                }
                                cut
                            }
                        };
                        match cut {
                            Cut::Not => Pass::Forward,
                            Cut::Now => {
                                cuts_now.fetch_add(1, Ordering::SeqCst);
                                flag.store(1, Ordering::SeqCst);
                                Pass::ForwardThenCut
                            }
                            Cut::AfterAnswer => {
                                flag.store(2, Ordering::SeqCst);
                                Pass::Forward
                            }
                            Cut::Before => {
                                cuts_now.fetch_add(1, Ordering::SeqCst);
                                flag.store(1, Ordering::SeqCst);
                                Pass::Cut
                            }
                        }
                    })
                });
                // server -> client: once a cut after the answer is armed, hold back what comes
                // until a tagged completion (a line starting with a tag) arrives, then cut
                // instead of forwarding it.
                let cuts = cuts2.clone();
                let mut pending: Vec<u8> = Vec::new();
                std::thread::spawn(move || {
                    pump(server, client, |data| {
                        match decision.load(Ordering::SeqCst) {
                            0 => return Pass::Forward,
                            1 => return Pass::Cut,
                            _ => {}
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
        CuttingProxy {
            port,
            cuts,
            stop,
            cutting,
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Pause (`false`) or resume (`true`) random cutting; a cut already decided still happens.
    pub fn set_cutting(&self, on: bool) {
        self.cutting.store(on, Ordering::SeqCst);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        // Wake the accept loop so that it sees the flag and ends.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Whether a command may be cut: never the ones a new connection needs to log in.
fn cuttable(verb: &str) -> bool {
    !matches!(
        verb,
        "CAPABILITY" | "LOGIN" | "AUTHENTICATE" | "STARTTLS" | "ENABLE" | "ID" | "LOGOUT" | "DONE"
    )
}

/// xorshift64.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// The client's command lines, found in the stream: literals (`{n}` / `{n+}` at a line's end)
/// are skipped by their length, so message text never looks like a command.
#[derive(Default)]
struct Lines {
    seen: Vec<u8>,
    partial: Vec<u8>,
    skip: usize,
}

impl Lines {
    /// The verbs (upper case; the second word after `UID`) of the lines completed by `data`.
    fn commands(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut verbs = Vec::new();
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            match data.iter().position(|&b| b == b'\n') {
                None => {
                    self.partial.extend_from_slice(data);
                    data = &[];
                }
                Some(i) => {
                    self.partial.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.partial);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    if let Some(open) = text.rfind('{') {
                        let n = text[open + 1..].trim_end_matches('}').trim_end_matches('+');
                        if text.ends_with('}') {
                            self.skip = n.parse().unwrap_or(0);
                        }
                    }
                    // Only the first line of a command names it; a continuation after a
                    // literal is ignored by the uppercase check below failing to parse a tag.
                    let mut words = text.split(' ');
                    let (_tag, verb) = (words.next(), words.next().unwrap_or(""));
                    let mut verb = verb.to_ascii_uppercase();
                    if verb == "UID" {
                        verb = words.next().unwrap_or("").to_ascii_uppercase();
                    }
                    if !verb.is_empty() && verb.bytes().all(|b| b.is_ascii_uppercase()) {
                        verbs.push(verb);
                    }
                }
            }
        }
        verbs
    }
}

/// What [`pump`] does with the bytes just read.
enum Pass {
    Forward,
    /// Forward these bytes, then close both sides.
    ForwardThenCut,
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
            Pass::ForwardThenCut => {
                let _ = to.write_all(&buf[..n]);
                break;
            }
            Pass::Hold => {}
            Pass::Cut => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A proxy that holds back, on one chosen connection, the server's answer to one kind of
/// command until the test lets it through: the way to make an answer arrive after something
/// else happened on another connection (a LIST that started before a RENAME and is answered
/// after it).
///
/// The connection is the first on which the client sends `mark` (the watcher's `NOTIFY`, say).
/// After [`HoldingProxy::arm`], the next `hold` command on it (say `LIST`) starts the hold:
/// from then on nothing the server sends on that connection reaches the client until
/// [`HoldingProxy::release`], which delivers it all, in order.
pub struct HoldingProxy {
    pub port: u16,
    shared: Arc<(Mutex<Hold>, std::sync::Condvar)>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Hold {
    /// The number of the marked connection (connections are numbered as accepted).
    marked: Option<usize>,
    armed: bool,
    holding: bool,
    held: Vec<u8>,
    /// The marked connection's way to the client, for [`HoldingProxy::release`].
    client: Option<TcpStream>,
}

impl HoldingProxy {
    /// See the type's documentation; `mark` and `hold` are command verbs (upper case).
    pub fn start(server_port: u16, mark: &'static str, hold: &'static str) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new((Mutex::new(Hold::default()), std::sync::Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    return;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let to_client = client.try_clone().unwrap();
                let shared = shared2.clone();
                let mut lines = Lines::default();
                std::thread::spawn(move || {
                    pump(c2, s2, |data| {
                        let (lock, changed) = &*shared;
                        let mut h = lock.lock().unwrap();
                        for verb in lines.commands(data) {
                            if h.marked.is_none() && verb == mark {
                                h.marked = Some(n);
                                h.client = to_client.try_clone().ok();
                            }
                            // Set before the command is forwarded: its answer cannot slip by.
                            if h.marked == Some(n) && h.armed && verb == hold {
                                h.armed = false;
                                h.holding = true;
                                changed.notify_all();
                            }
                        }
                        Pass::Forward
                    })
                });
                let shared = shared2.clone();
                std::thread::spawn(move || hold_back(server, client, n, &shared));
            }
        });
        HoldingProxy { port, shared, stop }
    }

    /// Hold the answer to the next `hold` command on the marked connection.
    pub fn arm(&self) {
        self.shared.0.lock().unwrap().armed = true;
    }

    /// Wait until the armed hold has begun (the command went to the server); panics after
    /// `timeout`.
    pub fn wait_held(&self, timeout: std::time::Duration) {
        let (lock, changed) = &*self.shared;
        let h = lock.lock().unwrap();
        let (h, _) = changed
            .wait_timeout_while(h, timeout, |h| h.armed || !h.holding)
            .unwrap();
        assert!(h.holding && !h.armed, "no held command within {timeout:?}");
    }

    /// Deliver what was held, in order, and stop holding.
    pub fn release(&self) {
        let mut h = self.shared.0.lock().unwrap();
        let held = std::mem::take(&mut h.held);
        if let Some(c) = h.client.as_mut() {
            let _ = c.write_all(&held);
        }
        h.holding = false;
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        // A held connection is let go, so that the client is not left waiting.
        self.release();
    }
}

/// Server -> client of connection `n`: forwarded, except while its hold is on. Deciding and
/// writing happen under the lock that [`HoldingProxy::release`] takes, so bytes are never
/// reordered.
fn hold_back(
    mut from: TcpStream,
    mut to: TcpStream,
    n: usize,
    shared: &(Mutex<Hold>, std::sync::Condvar),
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        let mut h = shared.0.lock().unwrap();
        if h.marked == Some(n) && h.holding {
            h.held.extend_from_slice(&buf[..k]);
        } else if to.write_all(&buf[..k]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
