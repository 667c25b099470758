//! Decompressing a DATA object's payload (XZ, LZ4 or ZSTD, as the object's flags say),
//! appending to the caller's buffer and never past a limit.
//!
//! A compressed payload is the one place a file decides how much memory the reader takes:
//! a few bytes of a hostile ZSTD frame or LZ4 block can claim gigabytes. The output grows
//! only as decompressed bytes arrive, up to `limit` (journald's own largest field), and a
//! size the format states up front (LZ4's) is believed only as far as the input could
//! possibly expand to.

use std::io;

pub(super) const XZ: u8 = 1;
pub(super) const LZ4: u8 = 2;
pub(super) const ZSTD: u8 = 4;

/// A payload that decompresses to more than the caller's limit, told apart from other
/// failures: the caller may have lowered the limit for the entry's sake (`File::fields`),
/// and then the entry, not the payload, is at fault, unless the payload states a size no
/// field can have.
#[derive(Debug)]
pub(super) struct PastLimit {
    /// The decompressed size the payload states up front (LZ4, XZ), if it does.
    pub(super) stated: Option<u64>,
    why: String,
}

impl std::fmt::Display for PastLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for PastLimit {}

fn past(stated: Option<u64>, why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, PastLimit { stated, why })
}

/// LZ4 expands at most 255 times (a literal length byte per 255 bytes of a match).
const LZ4_MAX_RATIO: usize = 255;

/// Reused between payloads: a ZSTD context allocates its window once.
pub(super) struct Decompressor {
    zstd: Option<zstd_safe::DCtx<'static>>,
    /// The payload's private copy: a mapped file's bytes can change while they are read
    /// (a writer, a cut page), and the decompressors were written for input that holds
    /// still (zstd is C).
    input: Vec<u8>,
    /// Bytes decompressed, by payloads that failed too: what the caller's bound on the
    /// work per entry counts (`File::fields`), beside the payloads it hands over.
    produced: u64,
}

/// A payload copy larger than this is not kept for the next one.
const KEEP_INPUT: usize = 1 << 20;

impl Decompressor {
    pub(super) fn new() -> Decompressor {
        Decompressor {
            zstd: None,
            input: Vec::new(),
            produced: 0,
        }
    }

    /// Bytes decompressed so far, failed payloads included; only ever grows.
    pub(super) fn produced(&self) -> u64 {
        self.produced
    }

    /// Appends the decompressed `src` to `out`. Fails, leaving `out` as it was, on a payload
    /// that does not decompress or would exceed `limit` bytes.
    pub(super) fn append(
        &mut self,
        kind: u8,
        src: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> io::Result<()> {
        let start = out.len();
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        input.extend_from_slice(src);
        let r = match kind {
            ZSTD => self.zstd(&input, out, start, limit),
            LZ4 => lz4(&input, out, limit),
            XZ => xz(&input, out, limit),
            _ => Err(bad(format!("unknown compression flags {kind:#x}"))),
        };
        self.produced += (out.len() - start) as u64;
        if input.capacity() <= KEEP_INPUT {
            self.input = input;
        }
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn zstd(
        &mut self,
        src: &[u8],
        out: &mut Vec<u8>,
        start: usize,
        limit: usize,
    ) -> io::Result<()> {
        let ctx = self.zstd.get_or_insert_with(zstd_safe::DCtx::create);
        ctx.reset(zstd_safe::ResetDirective::SessionOnly)
            .map_err(|c| bad(format!("zstd: {}", zstd_safe::get_error_name(c))))?;
        let mut input = zstd_safe::InBuffer::around(src);
        loop {
            if out.len() == out.capacity() {
                if out.len() - start >= limit {
                    return Err(past(
                        None,
                        format!("decompresses to more than {limit} bytes"),
                    ));
                }
                // Grow by what came so far (at least 4 KiB), never beyond the limit.
                let produced = out.len() - start;
                let add = produced.max(4096).min(limit - produced);
                out.reserve_exact(add);
            }
            let pos = out.len();
            let mut o = zstd_safe::OutBuffer::around_pos(out, pos);
            let hint = ctx
                .decompress_stream(&mut o, &mut input)
                .map_err(|c| bad(format!("zstd: {}", zstd_safe::get_error_name(c))))?;
            let wrote = o.pos() - pos;
            if out.len() - start > limit {
                return Err(past(
                    None,
                    format!("decompresses to more than {limit} bytes"),
                ));
            }
            if hint == 0 {
                // One frame ends the payload: journald writes exactly one.
                return if input.pos == src.len() {
                    Ok(())
                } else {
                    Err(bad("zstd: bytes after the frame".into()))
                };
            }
            if input.pos == src.len() && wrote == 0 && out.len() < out.capacity() {
                return Err(bad("zstd: the frame is cut short".into()));
            }
        }
    }
}

/// systemd's LZ4 payload: the decompressed size (64-bit little-endian), then one block.
fn lz4(src: &[u8], out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    if src.len() < 8 {
        return Err(bad("lz4: shorter than its size prefix".into()));
    }
    let size = u64::from_le_bytes(src[..8].try_into().expect("8 bytes"));
    let block = &src[8..];
    let most = block.len().saturating_mul(LZ4_MAX_RATIO);
    if size > limit as u64 && size <= most as u64 {
        return Err(past(
            Some(size),
            format!("lz4: claims {size} bytes, more than {limit}"),
        ));
    }
    if size > most as u64 {
        return Err(bad(format!(
            "lz4: claims {size} bytes from {} compressed",
            block.len()
        )));
    }
    let start = out.len();
    out.resize(start + size as usize, 0);
    let n = lz4_flex::block::decompress_into(block, &mut out[start..])
        .map_err(|e| bad(format!("lz4: {e}")))?;
    if n != size as usize {
        return Err(bad(format!("lz4: {n} bytes instead of the {size} claimed")));
    }
    Ok(())
}

fn xz(src: &[u8], out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    struct Bounded<'a> {
        out: &'a mut Vec<u8>,
        left: usize,
    }
    impl io::Write for Bounded<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if b.len() > self.left {
                return Err(bad("decompresses past the limit".into()));
            }
            self.left -= b.len();
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    // lzma-rs holds an LZMA2 chunk's output in memory before it writes any of it, with no
    // limit of its own: the chunks' stated sizes are summed first, and a payload that
    // would exceed the limit is refused before decoding.
    let size = xz_unpacked_size(src)?;
    if size > limit as u64 {
        return Err(past(
            Some(size),
            format!("xz: states {size} bytes, more than {limit}"),
        ));
    }
    let mut w = Bounded { out, left: limit };
    lzma_rs::xz_decompress(&mut io::BufReader::new(src), &mut w)
        .map_err(|e| bad(format!("xz: {e}")))
}

/// The decompressed size an XZ stream of one block (what systemd writes) states in its
/// LZMA2 chunk headers. Anything else is refused rather than decoded unbounded.
fn xz_unpacked_size(src: &[u8]) -> io::Result<u64> {
    let err = |what: &str| bad(format!("xz: {what}"));
    // Stream header: magic (6), flags (2), CRC32 (4); then the block header.
    if src.len() < 13 || &src[..6] != b"\xfd7zXZ\0" {
        return Err(err("not an xz stream"));
    }
    let block_header = (src[12] as usize + 1) * 4;
    if src[12] == 0 {
        return Err(err("no block"));
    }
    let mut at = 12 + block_header;
    let mut total: u64 = 0;
    loop {
        let control = *src.get(at).ok_or_else(|| err("the chunks end early"))?;
        let need = |n: usize| {
            src.get(at..at + n)
                .map(|b| b.to_vec())
                .ok_or_else(|| err("the chunks end early"))
        };
        match control {
            0x00 => return Ok(total),
            0x01 | 0x02 => {
                let b = need(3)?;
                let n = u16::from_be_bytes([b[1], b[2]]) as u64 + 1;
                total += n;
                at += 3 + n as usize;
            }
            0x80..=0xff => {
                let b = need(5)?;
                let unpacked =
                    (((control & 0x1f) as u64) << 16) + u16::from_be_bytes([b[1], b[2]]) as u64 + 1;
                let packed = u16::from_be_bytes([b[3], b[4]]) as usize + 1;
                total += unpacked;
                at += 5 + usize::from(control >= 0xc0) + packed;
            }
            _ => return Err(err("an invalid chunk")),
        }
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_frame(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
        let n = zstd_safe::compress(&mut out[..], data, 3).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn each_kind_appends_and_respects_the_limit() {
        let data: Vec<u8> = b"MESSAGE="
            .iter()
            .chain([b'x'; 100_000].iter())
            .copied()
            .collect();
        let mut d = Decompressor::new();
        let mut out = b"prefix".to_vec();
        d.append(ZSTD, &zstd_frame(&data), &mut out, 1 << 20)
            .unwrap();
        assert_eq!(&out[6..], &data[..]);
        let mut lz = (data.len() as u64).to_le_bytes().to_vec();
        lz.extend(lz4_flex::block::compress(&data));
        out.truncate(6);
        d.append(LZ4, &lz, &mut out, 1 << 20).unwrap();
        assert_eq!(&out[6..], &data[..]);
        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut io::BufReader::new(&data[..]), &mut x).unwrap();
        out.truncate(6);
        d.append(XZ, &x, &mut out, 1 << 20).unwrap();
        assert_eq!(&out[6..], &data[..]);
        for (kind, src) in [(ZSTD, zstd_frame(&data)), (LZ4, lz), (XZ, x)] {
            out.truncate(6);
            assert!(d.append(kind, &src, &mut out, 1000).is_err(), "kind {kind}");
            assert_eq!(out, b"prefix", "left as it was");
        }
    }

    #[test]
    fn an_xz_bomb_is_refused_from_its_headers() {
        let data = vec![0u8; 8 << 20];
        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut io::BufReader::new(&data[..]), &mut x).unwrap();
        assert_eq!(xz_unpacked_size(&x).unwrap(), 8 << 20);
        let mut out = Vec::new();
        let e = Decompressor::new()
            .append(XZ, &x, &mut out, 1 << 20)
            .unwrap_err();
        assert!(e.to_string().contains("states"), "{e}");
        assert!(out.capacity() < 1 << 20);
        for cut in [0, 5, 12, 13, 20, x.len() / 2] {
            assert!(xz_unpacked_size(&x[..cut]).is_err() || cut >= x.len() / 2);
        }
    }

    #[test]
    fn hostile_payloads_fail_without_allocating_their_claims() {
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        // LZ4 claiming 700 MiB from 10 bytes.
        let mut lz = (700u64 << 20).to_le_bytes().to_vec();
        lz.extend([0u8; 10]);
        assert!(d.append(LZ4, &lz, &mut out, 768 << 20).is_err());
        assert!(out.capacity() < 1 << 20);
        // A ZSTD bomb: 64 MiB of zeros compress to a few KiB; the limit stops it.
        let bomb = zstd_frame(&vec![0u8; 64 << 20]);
        assert!(d.append(ZSTD, &bomb, &mut out, 1 << 20).is_err());
        assert!(out.capacity() <= 3 << 20, "{}", out.capacity());
        for junk in [
            &b""[..],
            b"\x28\xb5\x2f\xfd",
            b"garbage garbage",
            &[0xff; 64],
        ] {
            for kind in [XZ, LZ4, ZSTD, 3, 0] {
                assert!(d.append(kind, junk, &mut out, 1 << 20).is_err());
            }
        }
        let good = zstd_frame(b"A=1");
        assert!(
            d.append(ZSTD, &good[..good.len() - 2], &mut out, 1 << 20)
                .is_err()
        );
        let mut two = good.clone();
        two.extend(&good);
        assert!(d.append(ZSTD, &two, &mut out, 1 << 20).is_err());
    }
}
