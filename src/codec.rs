//! Big-endian field access shared by every on-disk codec (segment header,
//! record, checkpoint, consume-queue unit), RocketMQ's string hash, and the
//! CRC-32 the hot paths use.
//! Callers pass offsets their own layout constants keep in bounds.

#[inline]
pub(crate) fn put_u16(dst: &mut [u8], at: usize, v: u16) {
    dst[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_u32(dst: &mut [u8], at: usize, v: u32) {
    dst[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_u64(dst: &mut [u8], at: usize, v: u64) {
    dst[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn get_u16(src: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&src[at..at + 2]);
    u16::from_be_bytes(b)
}

#[inline]
pub(crate) fn get_u32(src: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&src[at..at + 4]);
    u32::from_be_bytes(b)
}

#[inline]
pub(crate) fn get_u64(src: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&src[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Java's `String.hashCode` (over UTF-16 code units), which RocketMQ uses
/// for tag codes and index slots.
pub(crate) fn java_string_hash(s: &str) -> i32 {
    // ASCII (every key and tag in practice) is one UTF-16 unit per byte:
    // skip the UTF-16 encoder, which dominated on the dispatch path.
    if s.is_ascii() {
        return ascii_hash(s.as_bytes());
    }
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// `h = 31 * h + c` over the bytes, eight at a time: `31^8 * h + 31^7 * a +
/// ... + 31 * g + h'` is the same sum (wrapping arithmetic is exact modulo
/// 2^32), with eight independent products instead of a chain of eight
/// dependent ones (index keys are hashed once per message; 38-byte keys
/// took about 260 instructions four at a time).
fn ascii_hash(b: &[u8]) -> i32 {
    const P: [i32; 9] = {
        let mut p = [1i32; 9];
        let mut i = 1;
        while i < 9 {
            p[i] = p[i - 1].wrapping_mul(31);
            i += 1;
        }
        p
    };
    let mut words = b.chunks_exact(8);
    let mut h = 0i32;
    for w in &mut words {
        let mut sum = h.wrapping_mul(P[8]);
        for (j, &c) in w.iter().enumerate() {
            sum = sum.wrapping_add(i32::from(c).wrapping_mul(P[7 - j]));
        }
        h = sum;
    }
    words.remainder().iter().fold(h, |h, &c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// A fresh CRC-32 (IEEE) hasher. `crc32fast::Hasher::new` and
/// `crc32fast::hash` detect CPU features on every call (about 120
/// instructions with the detection cache's checks, more than hashing a
/// short key); cloning a hasher made once skips that.
pub(crate) fn crc32_hasher() -> crc32fast::Hasher {
    static PROTOTYPE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone()
}

/// CRC-32 (IEEE) of `bytes`, as `crc32fast::hash` computes it.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32_hasher();
    h.update(bytes);
    h.finalize()
}

/// `a == b` for the short slices of the read path (a record's topic
/// against the one asked for): whole-word compares, the last word
/// overlapping the one before, where `==` calls `memcmp`, whose call costs
/// more than the compare of a few bytes.
#[inline]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=8 => get_u32(a, 0) == get_u32(b, 0) && get_u32(a, n - 4) == get_u32(b, n - 4),
        _ => {
            let mut at = 0;
            while at + 8 < n {
                if get_u64(a, at) != get_u64(b, at) {
                    return false;
                }
                at += 8;
            }
            get_u64(a, n - 8) == get_u64(b, n - 8)
        }
    }
}

/// `b.is_ascii()`, a word at a time also below 8 bytes (std goes byte by
/// byte there), for the topic check every record read makes.
#[inline]
pub(crate) fn short_is_ascii(b: &[u8]) -> bool {
    let n = b.len();
    match n {
        0..=3 => b.is_ascii(),
        4..=8 => (get_u32(b, 0) | get_u32(b, n - 4)) & 0x8080_8080 == 0,
        _ => {
            let (mut acc, mut at) = (0u64, 0);
            while at + 8 < n {
                acc |= get_u64(b, at);
                at += 8;
            }
            (acc | get_u64(b, n - 8)) & 0x8080_8080_8080_8080 == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both short helpers agree with std on every length up to 40, for
    /// equal slices and for slices that differ in any one byte (or hold a
    /// non-ASCII byte there), whichever bit differs.
    #[test]
    fn short_helpers_match_std() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(short_eq(a, a) && short_is_ascii(a), "{n}");
            assert!(!short_eq(a, &base[..n.saturating_sub(1)]) || n == 0, "{n}");
            for at in 0..n {
                for bit in 0..8 {
                    let mut b = a.to_vec();
                    b[at] ^= 1 << bit;
                    assert_eq!(short_eq(a, &b), a == b.as_slice(), "{n} {at} {bit}");
                    assert_eq!(short_is_ascii(&b), b.is_ascii(), "{n} {at} {bit}");
                }
            }
        }
    }

    /// The eight-at-a-time hash equals the one-at-a-time definition on
    /// every length up to 40 and on bytes of every ASCII value.
    #[test]
    fn ascii_hash_matches_the_definition() {
        let text: Vec<u8> = (0..200u32).map(|i| (i * 37 % 128) as u8).collect();
        for start in [0, 1, 2, 3] {
            for len in 0..=40 {
                let s = &text[start..start + len];
                let slow = s.iter().fold(0i32, |h, &c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
                assert_eq!(ascii_hash(s), slow, "{s:?}");
            }
        }
        let all: Vec<u8> = (0..128).collect();
        let slow = all.iter().fold(0i32, |h, &c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        assert_eq!(ascii_hash(&all), slow);
    }

    /// The cloned hasher computes the standard CRC-32 (check value of
    /// "123456789" is 0xCBF43926), on short and long inputs alike.
    #[test]
    fn crc32_is_the_ieee_crc() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 151 % 256) as u8).collect();
        for len in [0, 1, 15, 16, 63, 64, 65, 127, 128, 300] {
            assert_eq!(crc32(&bytes[..len]), crc32fast::hash(&bytes[..len]), "{len}");
        }
    }

    #[test]
    fn round_trips_big_endian() {
        let mut b = [0u8; 14];
        put_u16(&mut b, 0, 0x0102);
        put_u32(&mut b, 2, 0x0304_0506);
        put_u64(&mut b, 6, 0x0708_090a_0b0c_0d0e);
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!((get_u16(&b, 0), get_u32(&b, 2), get_u64(&b, 6)), (0x0102, 0x0304_0506, 0x0708_090a_0b0c_0d0e));
    }

    #[test]
    fn string_hash_matches_java() {
        // Values computed with java.lang.String#hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }
}
