//! The legacy (pre-6.43) challenge/response login.

use md5::{Digest, Md5};

use crate::error::ProtoError;

/// Computes the `=response=` value for the legacy login: `00` followed by the hex MD5 of
/// a zero byte, the password and the unhexed challenge.
pub fn challenge_response(password: &[u8], challenge_hex: &str) -> Result<String, ProtoError> {
    let challenge = hex::decode(challenge_hex.trim()).map_err(|_| ProtoError::BadChallenge)?;
    let mut md5 = Md5::new();
    md5.update([0u8]);
    md5.update(password);
    md5.update(&challenge);
    Ok(format!("00{}", hex::encode(md5.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_vectors() {
        assert_eq!(
            challenge_response(b"", "93b438ec9b80057c06dd9fe67d56aa9a").unwrap(),
            "00e134102a9d330dd7b1849fedfea3cb57"
        );
        assert_eq!(
            challenge_response(b"passTest", "abc123").unwrap(),
            "0021277bff9ac7caf06aa608e46616d47f"
        );
    }

    #[test]
    fn non_hex_challenge_is_an_error() {
        assert_eq!(
            challenge_response(b"x", "zz"),
            Err(ProtoError::BadChallenge)
        );
    }
}
