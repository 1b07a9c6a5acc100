//! COMPRESS=DEFLATE (RFC 4978): both directions of a connection as raw deflate streams
//! (RFC 1951, no zlib header), started right after the tagged OK to `COMPRESS DEFLATE`.
//!
//! [`Deflate`] is sans-I/O: the transport hands it the bytes it read from the socket
//! ([`Deflate::take_in`]) and asks for plaintext ([`Deflate::read`]); it gives it plaintext to
//! send and writes what comes back ([`Deflate::compress`]). Every write ends with a sync flush
//! (an empty stored block), so the server can decode each command as soon as it arrives: a
//! command must never sit in the compressor waiting for more input.
//!
//! Invariants: a corrupt or truncated stream from the server is an [`Error::Protocol`] (fatal
//! to the connection, which the pool then replaces), never a panic; decompressed bytes are
//! handed out only as far as the caller's buffer reaches, the rest kept for the next read,
//! so the decoder's own limits (line, literal, response size) still bound what it holds.
//! Counters say how many bytes crossed the wire and how many they stood for.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};

/// Plaintext decompressed ahead of the reader, at most (see [`Deflate::inflate_some`]).
const PLAIN_CHUNK: usize = 256 * 1024;

/// One connection's compressor and decompressor, with their counters.
pub struct Deflate {
    inflate: Decompress,
    deflate: Compress,
    /// Compressed bytes received, not yet decompressed (from `in_pos`).
    input: Vec<u8>,
    in_pos: usize,
    /// Decompressed bytes not yet read (from `plain_pos`).
    plain: Vec<u8>,
    plain_pos: usize,
    /// The last decompression filled its output buffer: more output may be held inside.
    out_full: bool,
    /// The server ended its deflate stream: nothing more can come (RFC 4978 has no end).
    ended: bool,
    /// Compressed bytes received from the server (after TLS).
    pub wire_in: u64,
    /// The plaintext handed to the reader.
    pub plain_in: u64,
    /// Compressed bytes sent.
    pub wire_out: u64,
}

impl Deflate {
    /// A fresh pair of streams; `leftover` holds compressed bytes that arrived with the
    /// tagged OK (read before the switch).
    pub fn new(leftover: Vec<u8>) -> Deflate {
        let mut d = Deflate {
            inflate: Decompress::new(false),
            // Level 1: the link, not the CPU, is what compression saves; commands are short.
            deflate: Compress::new(Compression::fast(), false),
            input: Vec::new(),
            in_pos: 0,
            out_full: false,
            plain: Vec::new(),
            plain_pos: 0,
            ended: false,
            wire_in: 0,
            plain_in: 0,
            wire_out: 0,
        };
        d.take_in(&leftover);
        d
    }

    /// Whether compressed input is waiting to be decompressed, or the decompressor may hold
    /// output it had no room for (its last call filled the buffer it was given).
    pub fn has_input(&self) -> bool {
        self.in_pos < self.input.len() || self.out_full
    }

    /// Compressed bytes read from the socket.
    pub fn take_in(&mut self, data: &[u8]) {
        if self.in_pos == self.input.len() && !self.input.is_empty() {
            self.input.clear();
            self.in_pos = 0;
        }
        self.input.extend_from_slice(data);
        self.wire_in += data.len() as u64;
    }

    /// Plaintext into `buf` from what was decompressed, decompressing more input first when
    /// none is left: the number of bytes written, 0 when the input held none (more must be
    /// read from the socket).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !self.has_plain() {
            self.inflate_some()?;
        }
        let n = buf.len().min(self.plain.len() - self.plain_pos);
        buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
        self.plain_pos += n;
        self.plain_in += n as u64;
        Ok(n)
    }

    /// Whether decompressed bytes wait to be read.
    pub fn has_plain(&self) -> bool {
        self.plain_pos < self.plain.len()
    }

    /// Decompress the input held until it is used up or [`PLAIN_CHUNK`] bytes of plaintext
    /// wait (a small input can stand for a lot: the bound keeps memory flat).
    pub fn inflate_some(&mut self) -> Result<()> {
        if !self.has_plain() {
            self.plain.clear();
            self.plain_pos = 0;
        }
        while self.has_input() && self.plain.len() - self.plain_pos < PLAIN_CHUNK {
            if self.ended {
                return Err(Error::Protocol(
                    "the server sent data after the end of its compressed stream".into(),
                ));
            }
            self.plain.reserve(32 * 1024);
            let room = self.plain.capacity() - self.plain.len();
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress_vec(
                    &self.input[self.in_pos..],
                    &mut self.plain,
                    FlushDecompress::None,
                )
                .map_err(|e| {
                    Error::Protocol(format!("the server's compressed stream is corrupt: {e}"))
                })?;
            let used = (self.inflate.total_in() - in_before) as usize;
            let made = self.inflate.total_out() - out_before;
            self.in_pos += used;
            self.out_full = made as usize == room;
            match status {
                Status::StreamEnd => self.ended = true,
                Status::Ok | Status::BufError if used == 0 && made == 0 => break,
                Status::Ok | Status::BufError => {}
            }
        }
        Ok(())
    }

    /// Whether the server ended its stream (the connection can carry nothing more).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// `data` compressed and sync-flushed, ready for the socket.
    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start_in = self.deflate.total_in();
        loop {
            let done = (self.deflate.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            self.deflate
                .compress_vec(&data[done..], &mut out, FlushCompress::Sync)
                .map_err(|_| Error::Internal("compressing a command failed"))?;
            let all_in = (self.deflate.total_in() - start_in) as usize == data.len();
            // Finished when all input went in and the flush left spare room (else the
            // compressor may hold more output).
            if all_in && out.len() < out.capacity() {
                break;
            }
        }
        self.wire_out += out.len() as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_side(plain: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(plain.len() + 1024);
        c.compress_vec(plain, &mut out, FlushCompress::Sync)
            .expect("compress");
        out
    }

    fn read_all(d: &mut Deflate) -> Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 7]; // small on purpose: output spread over many reads
        loop {
            let n = d.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_stream_fed_at_every_split_point_decompresses_whole() {
        let plain = b"* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\na1 OK done\r\n".repeat(20);
        let wire = server_side(&plain);
        for split in 0..wire.len() {
            let mut d = Deflate::new(wire[..split].to_vec());
            let mut got = read_all(&mut d).expect("first half");
            d.take_in(&wire[split..]);
            got.extend(read_all(&mut d).expect("second half"));
            assert_eq!(got, plain, "split at {split}");
        }
        let d = {
            let mut d = Deflate::new(wire.clone());
            read_all(&mut d).expect("whole");
            d
        };
        assert_eq!(d.wire_in, wire.len() as u64);
        assert_eq!(d.plain_in, plain.len() as u64);
    }

    #[test]
    fn output_held_in_the_decompressor_is_read_without_more_input() {
        // A megabyte that compresses to a kilobyte: all input is taken in the first call,
        // most output is still inside the decompressor (regression: a read then waited on
        // the socket for bytes that never came, and the mount's read timed out).
        let plain = b"* 1 FETCH (BODY[] {1048576}\r\n".to_vec();
        let mut plain = plain;
        plain.extend(std::iter::repeat_n(b'x', 1 << 20));
        plain.extend_from_slice(b")\r\na1 OK done\r\n");
        let mut d = Deflate::new(server_side(&plain));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = d.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), plain.len());
        assert!(got == plain);
    }

    #[test]
    fn what_we_send_a_server_can_decompress_at_once() {
        let mut d = Deflate::new(Vec::new());
        let mut server = Decompress::new(false);
        for cmd in [&b"a1 NOOP\r\n"[..], b"a2 UID FETCH 1:* (FLAGS)\r\n", b""] {
            let wire = d.compress(cmd).expect("compress");
            let mut out = vec![0u8; 256];
            let before = server.total_out();
            server
                .decompress(&wire, &mut out, FlushDecompress::None)
                .expect("server side");
            let n = (server.total_out() - before) as usize;
            // Every command arrives whole: nothing waits in the compressor.
            assert_eq!(&out[..n], cmd);
        }
        // A large write goes out whole too.
        let big = vec![b'x'; 300_000];
        let wire = d.compress(&big).expect("big");
        let mut out = vec![0u8; 400_000];
        let before = server.total_out();
        server
            .decompress(&wire, &mut out, FlushDecompress::None)
            .expect("big on the server side");
        assert_eq!((server.total_out() - before) as usize, big.len());
    }

    #[test]
    fn a_corrupt_stream_is_a_protocol_error_not_a_panic() {
        let good = server_side(&b"* OK fine\r\n".repeat(50));
        let cases: [&[u8]; 3] = [
            // A block of the reserved type 3 (BFINAL 1, BTYPE 11).
            &[0x07, 0x00, 0x00],
            // A stored block whose LEN and NLEN disagree.
            &[0x00, 0x05, 0x00, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o'],
            // Noise.
            &[0xfe; 40],
        ];
        for (i, bad) in cases.into_iter().enumerate() {
            // Alone, and after a valid stretch of stream (the sync flush ends on a byte).
            for prefix in [&[][..], &good[..]] {
                let mut wire = prefix.to_vec();
                wire.extend_from_slice(bad);
                let mut d = Deflate::new(wire);
                match read_all(&mut d) {
                    Err(Error::Protocol(words)) => assert!(words.contains("corrupt"), "{words}"),
                    other => panic!("case {i}: {other:?}"),
                }
            }
        }
    }
}
