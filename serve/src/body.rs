//! Reading a request body under a size bound. A body past the bound is read on to its end
//! (up to [`DRAIN_LIMIT`]) and dropped, so that the client, still sending, hears the 413
//! instead of a reset connection.

use axum::body::{Body, Bytes};
use futures_util::StreamExt;

use crate::api::ApiError;

/// Bytes of an oversized body read and dropped before the connection is given up.
pub const DRAIN_LIMIT: usize = 64 << 20;

/// The whole body if it holds at most `limit` bytes; 413 otherwise.
pub async fn read(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", format!("the request body could not be read: {e}")))?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(format!("the request body has {} bytes; this server takes at most {limit}", if seen > DRAIN_LIMIT { format!("more than {DRAIN_LIMIT}") } else { seen.to_string() })));
    }
    Ok(Bytes::from(buf))
}
