//! Content hashing for model versions.
//!
//! This uses 64-bit FNV-1a, written by hand so the example needs no extra
//! crate. FNV-1a is fast and simple but NOT cryptographic: it is fine for
//! naming model versions in an example, whereas a real registry should use
//! SHA-256 or BLAKE3.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Number of hex digits of the content hash used as the model version.
pub const VERSION_LEN: usize = 12;

/// 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The full hash as 16 lowercase hex digits.
pub fn fnv1a64_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

/// The model version: a [`VERSION_LEN`]-digit prefix of the content hash of model.json.
pub fn model_version(model_json: &[u8]) -> String {
    let mut hex = fnv1a64_hex(model_json);
    hex.truncate(VERSION_LEN);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn version_is_a_prefix() {
        assert_eq!(model_version(b"foobar"), "85944171f739");
    }
}
