//! The BLOB format of every embedding column: little-endian `f32`, the same on every CPU.

use super::error::StoreError;

/// Encodes an embedding as little-endian `f32`s, the BLOB format of every
/// embedding column.
pub fn f32s_to_blob(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Decodes [`f32s_to_blob`]'s format; a length that is not a multiple of 4
/// means the row is damaged, not that the tail can be ignored.
pub fn blob_to_f32s(b: &[u8]) -> Result<Vec<f32>, StoreError> {
    let mut out = Vec::with_capacity(b.len() / 4);
    blob_into_f32s(b, &mut out)?;
    Ok(out)
}

/// [`blob_to_f32s`] into a buffer that is reused (cleared first): a scan over millions of
/// windows allocates nothing per window.
pub fn blob_into_f32s(b: &[u8], out: &mut Vec<f32>) -> Result<(), StoreError> {
    if !b.len().is_multiple_of(4) {
        return Err(StoreError::BadBlob { len: b.len() });
    }
    out.clear();
    out.extend(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}
