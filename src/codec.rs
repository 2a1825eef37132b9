//! Big-endian field access shared by every on-disk codec (segment header,
//! record, checkpoint, consume-queue unit), and RocketMQ's string hash.
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
        return s.bytes().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    }
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
