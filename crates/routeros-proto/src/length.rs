//! Word length prefixes: one to five bytes, big-endian, chosen by the length.

use crate::error::ProtoError;

/// The largest length the five-byte form can carry.
pub const MAX_WORD_LEN: u64 = u32::MAX as u64;

/// How many bytes the prefix for `len` takes.
pub fn encoded_length_len(len: u32) -> usize {
    match len {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0xFFF_FFFF => 4,
        _ => 5,
    }
}

/// Appends the length prefix for a word of `len` bytes.
pub fn encode_length(len: u32, out: &mut Vec<u8>) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0x3FFF => out.extend_from_slice(&((len | 0x8000) as u16).to_be_bytes()),
        0x4000..=0x1F_FFFF => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
        0x20_0000..=0xFFF_FFFF => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
        _ => {
            out.push(0xF0);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Reads a length prefix from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is too short to hold the whole prefix, and
/// `Ok(Some((len, prefix_bytes)))` otherwise. A reserved control byte (`>= 0xF8`) is an error.
/// The five-byte form with a first byte of `0xF1..=0xF7` is also rejected: no RouterOS peer
/// sends it and it cannot carry a valid length.
pub fn decode_length(buf: &[u8]) -> Result<Option<(u32, usize)>, ProtoError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let need = match first {
        0x00..=0x7F => return Ok(Some((u32::from(first), 1))),
        0x80..=0xBF => 2,
        0xC0..=0xDF => 3,
        0xE0..=0xEF => 4,
        0xF0 => 5,
        other => return Err(ProtoError::ControlByte(other)),
    };
    if buf.len() < need {
        return Ok(None);
    }
    let len = match need {
        2 => u32::from(u16::from_be_bytes([buf[0], buf[1]]) & 0x3FFF),
        3 => u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) & 0x1F_FFFF,
        4 => u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) & 0x0FFF_FFFF,
        _ => u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]),
    };
    Ok(Some((len, need)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode_length(len, &mut out);
        out
    }

    /// The vectors of `routeros-api.md` section 1.
    const VECTORS: &[(u32, &[u8])] = &[
        (0, &[0x00]),
        (127, &[0x7F]),
        (130, &[0x80, 0x82]),
        (0x87, &[0x80, 0x87]),
        (256, &[0x81, 0x00]),
        (0x3FFF, &[0xBF, 0xFF]),
        (0x4000, &[0xC0, 0x40, 0x00]),
        (0x4321, &[0xC0, 0x43, 0x21]),
        (2_097_140, &[0xDF, 0xFF, 0xF4]),
        (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
        (0x2A_CDEF, &[0xE0, 0x2A, 0xCD, 0xEF]),
        (268_435_440, &[0xEF, 0xFF, 0xFF, 0xF0]),
        (0x1000_0080, &[0xF0, 0x10, 0x00, 0x00, 0x80]),
        (u32::MAX, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
    ];

    #[test]
    fn encodes_documented_vectors() {
        for (len, bytes) in VECTORS {
            assert_eq!(enc(*len), *bytes, "length {len:#x}");
            assert_eq!(encoded_length_len(*len), bytes.len(), "length {len:#x}");
        }
    }

    #[test]
    fn decodes_documented_vectors() {
        for (len, bytes) in VECTORS {
            assert_eq!(
                decode_length(bytes),
                Ok(Some((*len, bytes.len()))),
                "{bytes:02X?}"
            );
        }
    }

    #[test]
    fn short_prefix_needs_more_bytes() {
        for (_, bytes) in VECTORS {
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_length(&bytes[..cut]),
                    Ok(None),
                    "{bytes:02X?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn control_bytes_are_rejected() {
        for b in 0xF8..=0xFF {
            assert_eq!(
                decode_length(&[b, 0, 0, 0, 0]),
                Err(ProtoError::ControlByte(b))
            );
        }
        assert_eq!(
            decode_length(&[0xF1, 0, 0, 0, 0]),
            Err(ProtoError::ControlByte(0xF1))
        );
    }

    proptest::proptest! {
        #[test]
        fn length_round_trips(len in proptest::prelude::any::<u32>()) {
            let bytes = enc(len);
            proptest::prop_assert_eq!(decode_length(&bytes), Ok(Some((len, bytes.len()))));
        }
    }
}
