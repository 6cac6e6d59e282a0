//! Compatibility with etcd 3.4 clients that send an invalid HTTP/2 `:authority`.
//!
//! etcd 3.4's `clientv3` dials a single endpoint for Maintenance calls (`etcdctl endpoint
//! status`, `defrag`, `snapshot save`, ...) as `passthrough:///http://host:port`, and grpc-go
//! then sends `:authority: http://host:port`. Go's HTTP/2 server ignores the value; h2 (under
//! tonic) refuses it as malformed and resets the stream with PROTOCOL_ERROR, so on a plaintext
//! endpoint `etcdctl endpoint status` failed against etcd-lite while it works against etcd.
//! (Over TLS the client sends the server name instead, which is valid.)
//!
//! [`AuthorityFix`] sits between a plaintext socket and h2. It follows the HTTP/2 frames the
//! client sends and, in a HEADERS frame, rewrites a literal `:authority` that is not a valid
//! authority into one that is and has the *same length* (`http://h:p` → `http---h:p`), sent
//! without Huffman coding. Same length matters: a literal may enter the HPACK dynamic table,
//! whose eviction depends on entry sizes, so client and server tables stay in step. Every
//! other byte passes through unchanged; a connection that does not start with the HTTP/2
//! preface is passed through untouched.
//!
//! It must never reject or reorder anything: when in doubt (a header block split over
//! CONTINUATION frames, an oversized frame, a value it cannot decode) it leaves the bytes as
//! they are and lets h2 decide.

use std::{
    io,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// h2's default SETTINGS_MAX_FRAME_SIZE: a rewritten frame must still fit in it.
const MAX_FRAME_SIZE: usize = 16_384;
/// HEADERS frames larger than this are passed through without being buffered.
const MAX_BUFFERED_FRAME: usize = 64 * 1024;
/// The static-table index of `:authority` (RFC 7541, Appendix A).
const AUTHORITY_INDEX: u64 = 1;

/// Where the reader is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the connection preface.
    Preface,
    /// At the start of a frame.
    FrameHeader,
    /// Inside a frame payload that passes unchanged: this many bytes left.
    Skip(usize),
    /// Not HTTP/2 (or gave up): everything passes unchanged.
    Passthrough,
}

/// A plaintext connection whose inbound HTTP/2 `:authority` is repaired (see module docs).
pub struct AuthorityFix<IO> {
    inner: IO,
    state: State,
    /// Bytes read from the client, not yet examined.
    pending: BytesMut,
    /// Bytes examined (and possibly rewritten), not yet handed to h2.
    ready: BytesMut,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    pub fn new(inner: IO) -> Self {
        AuthorityFix {
            inner,
            state: State::Preface,
            pending: BytesMut::new(),
            ready: BytesMut::new(),
            eof: false,
        }
    }

    /// Moves what can be decided from `pending` to `ready`; false when more input is needed.
    fn process(&mut self) -> bool {
        match self.state {
            State::Preface => {
                let n = self.pending.len().min(PREFACE.len());
                if self.pending[..n] != PREFACE[..n] {
                    self.state = State::Passthrough;
                    return true;
                }
                if n < PREFACE.len() {
                    return false;
                }
                self.ready.extend_from_slice(&self.pending.split_to(n));
                self.state = State::FrameHeader;
                true
            }
            State::FrameHeader => {
                if self.pending.len() < FRAME_HEADER_LEN {
                    return false;
                }
                let len = (usize::from(self.pending[0]) << 16)
                    | (usize::from(self.pending[1]) << 8)
                    | usize::from(self.pending[2]);
                let kind = self.pending[3];
                if kind == FRAME_HEADERS && len <= MAX_BUFFERED_FRAME {
                    if self.pending.len() < FRAME_HEADER_LEN + len {
                        return false;
                    }
                    let frame = self.pending.split_to(FRAME_HEADER_LEN + len);
                    match rewrite_headers_frame(&frame) {
                        Some(fixed) => self.ready.extend_from_slice(&fixed),
                        None => self.ready.extend_from_slice(&frame),
                    }
                    return true;
                }
                self.ready
                    .extend_from_slice(&self.pending.split_to(FRAME_HEADER_LEN));
                self.state = State::Skip(len);
                true
            }
            State::Skip(0) => {
                self.state = State::FrameHeader;
                true
            }
            State::Skip(left) => {
                if self.pending.is_empty() {
                    return false;
                }
                let n = left.min(self.pending.len());
                self.ready.extend_from_slice(&self.pending.split_to(n));
                self.state = State::Skip(left - n);
                true
            }
            State::Passthrough => {
                if self.pending.is_empty() {
                    return false;
                }
                let all = self.pending.split();
                self.ready.extend_from_slice(&all);
                true
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left undecided goes out as it is; then EOF.
                let rest = this.pending.split();
                this.ready.extend_from_slice(&rest);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.process() {
                continue;
            }
            // Fast path: payload bytes that pass unchanged go straight into the caller's buffer.
            let direct = match this.state {
                State::Skip(left) if this.pending.is_empty() => Some(left),
                State::Passthrough if this.pending.is_empty() => Some(usize::MAX),
                _ => None,
            };
            if let Some(limit) = direct {
                let want = limit.min(buf.remaining());
                let dst = buf.initialize_unfilled_to(want);
                let mut direct_buf = ReadBuf::new(dst);
                match Pin::new(&mut this.inner).poll_read(cx, &mut direct_buf) {
                    Poll::Ready(Ok(())) => {
                        let n = direct_buf.filled().len();
                        buf.advance(n);
                        if let State::Skip(left) = this.state {
                            this.state = State::Skip(left - n);
                        }
                        return Poll::Ready(Ok(()));
                    }
                    other => return other,
                }
            }
            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Ready(Ok(())) => {
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        this.eof = true;
                    } else {
                        this.pending.extend_from_slice(filled);
                    }
                }
                other => return other,
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The HEADERS frame with its `:authority` repaired, or `None` to send it unchanged.
fn rewrite_headers_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let flags = frame[4];
    let payload = &frame[FRAME_HEADER_LEN..];
    let mut start = 0;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    let end = payload.len().checked_sub(pad)?;
    if start > end {
        return None;
    }
    let block = &payload[start..end];
    let (from, to, replacement) = find_bad_authority(block)?;

    let mut new_payload = Vec::with_capacity(payload.len() + 8);
    new_payload.extend_from_slice(&payload[..start]);
    new_payload.extend_from_slice(&block[..from]);
    new_payload.extend_from_slice(&replacement);
    new_payload.extend_from_slice(&block[to..]);
    new_payload.extend_from_slice(&payload[end..]);
    let len = new_payload.len();
    if len > MAX_FRAME_SIZE {
        return None;
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(&frame[3..FRAME_HEADER_LEN]);
    out.extend_from_slice(&new_payload);
    tracing::debug!("rewrote an invalid :authority from an etcd 3.4 client");
    Some(out)
}

/// Finds a literal `:authority` field whose value h2 would refuse; returns its byte range in
/// the header block and the representation to put there instead.
fn find_bad_authority(block: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    let mut i = 0;
    while i < block.len() {
        let first = block[i];
        if first & 0x80 != 0 {
            // Indexed field.
            i += decode_int(&block[i..], 7)?.1;
            continue;
        }
        if first & 0xE0 == 0x20 {
            // Dynamic table size update.
            i += decode_int(&block[i..], 5)?.1;
            continue;
        }
        // A literal: with incremental indexing (01), without indexing (0000) or never
        // indexed (0001).
        let prefix = if first & 0xC0 == 0x40 { 6 } else { 4 };
        let start = i;
        let (name_index, n) = decode_int(&block[i..], prefix)?;
        i += n;
        if name_index == 0 {
            i += skip_string(&block[i..])?;
        }
        let value_start = i;
        if name_index != AUTHORITY_INDEX {
            i += skip_string(&block[i..])?;
            continue;
        }
        let (value, n) = read_string(&block[i..])?;
        i += n;
        if http::uri::Authority::try_from(value.as_slice()).is_ok() {
            continue;
        }
        let fixed = repair_authority(&value)?;
        let mut repr = block[start..value_start].to_vec();
        encode_int(fixed.len() as u64, 7, 0x00, &mut repr);
        repr.extend_from_slice(&fixed);
        return Some((start, i, repr));
    }
    None
}

/// A valid authority of the same length: every byte before the port that cannot be in a host
/// name becomes `-` (`http://127.0.0.1:2379` → `http---127.0.0.1:2379`).
fn repair_authority(value: &[u8]) -> Option<Vec<u8>> {
    let host_end = match value.iter().rposition(|b| *b == b':') {
        Some(p) if p + 1 < value.len() && value[p + 1..].iter().all(u8::is_ascii_digit) => p,
        _ => value.len(),
    };
    let mut fixed: Vec<u8> = value[..host_end]
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
                b
            } else {
                b'-'
            }
        })
        .collect();
    fixed.extend_from_slice(&value[host_end..]);
    http::uri::Authority::try_from(fixed.as_slice()).ok()?;
    Some(fixed)
}

/// An HPACK integer with an N-bit prefix (RFC 7541, 5.1): (value, bytes used).
fn decode_int(buf: &[u8], prefix_bits: u32) -> Option<(u64, usize)> {
    let max = (1u64 << prefix_bits) - 1;
    let mut value = u64::from(*buf.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    let mut shift = 0;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        if shift > 56 {
            return None;
        }
        value += u64::from(b & 0x7F) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn encode_int(value: u64, prefix_bits: u32, first_byte_flags: u8, out: &mut Vec<u8>) {
    let max = (1u64 << prefix_bits) - 1;
    if value < max {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7F) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Bytes taken by a string literal (RFC 7541, 5.2).
fn skip_string(buf: &[u8]) -> Option<usize> {
    let (len, n) = decode_int(buf, 7)?;
    let total = n.checked_add(usize::try_from(len).ok()?)?;
    (total <= buf.len()).then_some(total)
}

/// A string literal's decoded value and the bytes it took.
fn read_string(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let huffman = *buf.first()? & 0x80 != 0;
    let total = skip_string(buf)?;
    let (_, n) = decode_int(buf, 7)?;
    let raw = &buf[n..total];
    let value = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Some((value, total))
}

/// Code lengths of the HPACK Huffman code for bytes 0..=255 (RFC 7541, Appendix B); EOS (256)
/// is 30 bits. The code is canonical, so the lengths define it.
#[rustfmt::skip]
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];
const HUFFMAN_EOS: u16 = 256;
const HUFFMAN_MAX_LEN: usize = 30;

/// The canonical code, for decoding: per length, the first code and where its symbols start.
struct Canonical {
    first_code: [u32; HUFFMAN_MAX_LEN + 1],
    count: [u32; HUFFMAN_MAX_LEN + 1],
    offset: [usize; HUFFMAN_MAX_LEN + 1],
    /// Symbols sorted by (code length, symbol).
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let length = |s: u16| -> usize {
            if s == HUFFMAN_EOS {
                HUFFMAN_MAX_LEN
            } else {
                usize::from(HUFFMAN_LENGTHS[usize::from(s)])
            }
        };
        let mut symbols: Vec<u16> = (0..=HUFFMAN_EOS).collect();
        symbols.sort_by_key(|&s| (length(s), s));
        let mut c = Canonical {
            first_code: [0; HUFFMAN_MAX_LEN + 1],
            count: [0; HUFFMAN_MAX_LEN + 1],
            offset: [0; HUFFMAN_MAX_LEN + 1],
            symbols,
        };
        for &s in &c.symbols {
            c.count[length(s)] += 1;
        }
        let mut code = 0u32;
        let mut index = 0usize;
        for len in 1..=HUFFMAN_MAX_LEN {
            c.first_code[len] = code;
            c.offset[len] = index;
            code = (code + c.count[len]) << 1;
            index += c.count[len] as usize;
        }
        c
    })
}

/// Decodes an HPACK Huffman string; `None` if it is not valid.
fn huffman_decode(input: &[u8]) -> Option<Vec<u8>> {
    let c = canonical();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in input {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if len > HUFFMAN_MAX_LEN {
                return None;
            }
            let delta = code.wrapping_sub(c.first_code[len]);
            if code >= c.first_code[len] && delta < c.count[len] {
                let symbol = c.symbols[c.offset[len] + delta as usize];
                if symbol == HUFFMAN_EOS {
                    return None;
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // What is left is padding: fewer than 8 bits, all ones.
    if len >= 8 || code != (1u32 << len) - 1 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A test-only encoder for the same canonical code.
    fn huffman_encode(input: &[u8]) -> Vec<u8> {
        let c = canonical();
        let mut codes = [(0u32, 0usize); 256];
        for len in 1..=HUFFMAN_MAX_LEN {
            for k in 0..c.count[len] as usize {
                let s = c.symbols[c.offset[len] + k];
                if s != HUFFMAN_EOS {
                    codes[usize::from(s)] = (c.first_code[len] + k as u32, len);
                }
            }
        }
        let (mut acc, mut bits, mut out) = (0u64, 0usize, Vec::new());
        for &b in input {
            let (code, len) = codes[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | (0xFF >> bits));
        }
        out
    }

    #[test]
    fn huffman_matches_rfc7541_examples() {
        let cases: [(&[u8], &str); 4] = [
            (b"www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
            (b"no-cache", "a8eb10649cbf"),
            (b"custom-key", "25a849e95ba97d7f"),
            (b"custom-value", "25a849e95bb8e8b4bf"),
        ];
        for (text, hex) in cases {
            let coded: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(huffman_decode(&coded).as_deref(), Some(text));
            assert_eq!(huffman_encode(text), coded);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(huffman_decode(&huffman_encode(&all)), Some(all));
    }

    #[test]
    fn integers_round_trip() {
        for (value, prefix) in [(10, 5), (1337, 5), (42, 8), (127, 7), (0, 7), (300, 6)] {
            let mut out = Vec::new();
            encode_int(value, prefix, 0, &mut out);
            assert_eq!(decode_int(&out, prefix), Some((value, out.len())));
        }
        assert_eq!(decode_int(&[0x1f, 0x9a, 0x0a], 5), Some((1337, 3)));
    }

    #[test]
    fn repairs_keep_the_length() {
        assert_eq!(
            repair_authority(b"http://127.0.0.1:2379").as_deref(),
            Some(&b"http---127.0.0.1:2379"[..])
        );
        assert_eq!(
            repair_authority(b"/var/run/etcd.sock").as_deref(),
            Some(&b"-var-run-etcd.sock"[..])
        );
        assert_eq!(repair_authority(b""), None);
    }

    /// A grpc-go style request header block: :method POST, :scheme http, :path (literal),
    /// :authority (literal, Huffman, incremental indexing), content-type.
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut block = vec![0x83, 0x86];
        block.push(0x44); // :path, incremental indexing, static name 4
        let path = b"/etcdserverpb.Maintenance/Status";
        block.push(path.len() as u8);
        block.extend_from_slice(path);
        block.push(0x41); // :authority, incremental indexing, static name 1
        let coded = huffman_encode(authority);
        encode_int(coded.len() as u64, 7, 0x80, &mut block);
        block.extend_from_slice(&coded);
        block.push(0x5f); // content-type, static name 31
        block.push(0x10);
        block.push(16);
        block.extend_from_slice(b"application/grpc");
        block
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn rewrites_a_bad_authority_and_nothing_else() {
        let block = request_block(b"http://127.0.0.1:2379");
        let headers = frame(FRAME_HEADERS, 0x4, 1, &block);
        let fixed = rewrite_headers_frame(&headers).expect("rewritten");
        let new_block = &fixed[FRAME_HEADER_LEN..];
        let len = (usize::from(fixed[1]) << 8) | usize::from(fixed[2]);
        assert_eq!(len, new_block.len());
        // Everything before :authority is unchanged.
        let at = 2 + 2 + 32;
        assert_eq!(new_block[..at], block[..at]);
        assert_eq!(new_block[at], 0x41);
        let (value, n) = read_string(&new_block[at + 1..]).unwrap();
        assert_eq!(value, b"http---127.0.0.1:2379");
        assert_eq!(new_block[at + 1] & 0x80, 0, "sent raw, not Huffman");
        assert_eq!(&new_block[at + 1 + n..], &block[block.len() - 19..]);

        let good = frame(FRAME_HEADERS, 0x4, 1, &request_block(b"127.0.0.1:2379"));
        assert!(rewrite_headers_frame(&good).is_none());
    }

    #[test]
    fn padded_and_prioritized_frames() {
        let block = request_block(b"http://localhost:2379");
        let mut payload = vec![3]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0, 0, 0]);
        let headers = frame(
            FRAME_HEADERS,
            0x4 | FLAG_PADDED | FLAG_PRIORITY,
            3,
            &payload,
        );
        let fixed = rewrite_headers_frame(&headers).expect("rewritten");
        let p = &fixed[FRAME_HEADER_LEN..];
        assert_eq!(p[..6], payload[..6]);
        assert_eq!(p[p.len() - 3..], [0, 0, 0]);
        assert!(find_bad_authority(&p[6..p.len() - 3]).is_none());
    }

    #[tokio::test]
    async fn a_connection_passes_through_with_the_fix() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut fixed = AuthorityFix::new(server);
        let settings = frame(0x4, 0, 0, &[]);
        let headers = frame(
            FRAME_HEADERS,
            0x4,
            1,
            &request_block(b"http://127.0.0.1:2379"),
        );
        let data = frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]);
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(&settings);
        sent.extend_from_slice(&headers);
        sent.extend_from_slice(&data);
        // Dribble the bytes in small pieces: frames straddle reads.
        for piece in sent.chunks(7) {
            client.write_all(piece).await.unwrap();
        }
        drop(client);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();

        let mut expected = PREFACE.to_vec();
        expected.extend_from_slice(&settings);
        expected.extend_from_slice(&rewrite_headers_frame(&headers).unwrap());
        expected.extend_from_slice(&data);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn other_protocols_pass_untouched() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut fixed = AuthorityFix::new(server);
        let sent = b"GET /health HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }
}
