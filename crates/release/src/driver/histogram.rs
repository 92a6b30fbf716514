//! The latency histogram's shape, and its serialized form for merging runs
//! recorded by other processes.
//!
//! Every histogram the driver records has the same bounds (1 µs to one hour,
//! 3 significant digits), so adding one to another never fails and never
//! loses a count. Values above an hour are clamped to it.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{DeserializeError, Deserializer, Serializer, V2Serializer};

use super::DriverError;

/// The highest latency a histogram tracks, in microseconds: one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Significant digits kept: a recorded value is exact to within 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The first four bytes of hdrhistogram's uncompressed V2 encoding.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;

/// The length of the V2 header, before the counts.
const V2_HEADER_LEN: usize = 40;

/// An empty latency histogram of the driver's shape: microseconds from 1 to
/// one hour, 3 significant digits, fixed memory (no auto-resize).
///
/// Merge runs with [`Histogram::add`] into one of these; it accepts any
/// histogram the driver recorded or [`decode_histogram`] returned.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid")
}

/// Serializes a histogram losslessly, in hdrhistogram's V2 encoding
/// (uncompressed; the format other HdrHistogram implementations read).
pub fn encode_histogram(histogram: &Histogram<u64>) -> Result<Vec<u8>, DriverError> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(DriverError::EncodeHistogram)?;
    Ok(bytes)
}

/// Reads back what [`encode_histogram`] wrote: the same bounds, the same
/// counts (the result compares equal to the original).
///
/// Only the uncompressed V2 form is accepted, and its declared length must
/// match the bytes given, so untrusted bytes cannot make it allocate more
/// than they hold.
pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, DriverError> {
    let Some(header) = bytes.get(..8).filter(|h| h[..4] == V2_COOKIE.to_be_bytes()) else {
        return Err(DriverError::DecodeHistogram(
            DeserializeError::InvalidCookie,
        ));
    };
    let declared = u64::from(u32::from_be_bytes([
        header[4], header[5], header[6], header[7],
    ]));
    let actual = bytes.len().saturating_sub(V2_HEADER_LEN) as u64;
    if bytes.len() < V2_HEADER_LEN || declared != actual {
        return Err(DriverError::HistogramLength { declared, actual });
    }
    // hdrhistogram allocates the counts from the header's bounds before it
    // reads them: a 40-byte header declaring huge bounds would allocate
    // tens of megabytes. Only the driver's own shape is accepted (which is
    // also the only shape `latency_histogram().add` takes without loss).
    let field = |at: usize, len: usize| -> u64 {
        bytes[at..at + len]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    };
    let (digits, low, high) = (field(12, 4) as u32, field(16, 8), field(24, 8));
    if (low, high, digits) != (1, HIGHEST_MICROS, u32::from(SIGNIFICANT_DIGITS)) {
        return Err(DriverError::HistogramShape {
            low,
            high,
            digits,
            expected_high: HIGHEST_MICROS,
            expected_digits: u32::from(SIGNIFICANT_DIGITS),
        });
    }
    let mut reader = bytes;
    Deserializer::new()
        .deserialize(&mut reader)
        .map_err(DriverError::DecodeHistogram)
}
