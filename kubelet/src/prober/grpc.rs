//! gRPC probes: one `grpc.health.v1.Health/Check` call over cleartext HTTP/2 (h2c), as upstream
//! pkg/probe/grpc. The protobuf messages are a string and an enum, so they are encoded by hand.
//! Failure messages follow upstream's wording.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http::{authority, go_io_message};
use super::{ProbeResult, KUBE_VERSION};

/// The health service's method path.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Largest response message we accept; a HealthCheckResponse is a few bytes.
const MAX_MESSAGE: usize = 64 * 1024;

/// gRPC status codes by number, with grpc-go's names for messages.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const DEADLINE_EXCEEDED: u32 = 4;
const UNIMPLEMENTED: u32 = 12;

/// HealthCheckResponse.ServingStatus names.
const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
const SERVING: u64 = 1;

/// Calls Health/Check for `service` on `host:port` within `timeout`.
pub(crate) async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> ProbeResult {
    let addr = authority(host, port);
    let deadline = Instant::now() + timeout;
    let connect = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", go_io_message(&e)))?;
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .map_err(|e| e.to_string())
    };
    let (mut sender, conn) = match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => {
            return ProbeResult::Failure(format!(
                "timeout: failed to connect service {addr:?} within {timeout:?}: context deadline exceeded"
            ))
        }
        Ok(Err(e)) => {
            return ProbeResult::Failure(format!(
                "error: failed to connect service at {addr:?}: {e}"
            ))
        }
        Ok(Ok(pair)) => pair,
    };

    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{CHECK_PATH}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, format!("kube-probe/{KUBE_VERSION}"))
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
        .body(Full::new(encode_request(service)));
    let req = match req {
        Ok(r) => r,
        Err(e) => return rpc_failure(2, &e.to_string(), timeout),
    };
    let call = async move {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, mut body) = resp.into_parts();
        if parts.status != http::StatusCode::OK {
            return Ok(Reply::HttpStatus(parts.status.as_u16()));
        }
        // A trailers-only reply carries grpc-status in the head.
        if let Some(code) = grpc_status(&parts.headers) {
            return Ok(Reply::Status(code, grpc_message(&parts.headers)));
        }
        let mut data = BytesMut::new();
        let mut trailers = HeaderMap::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            match frame.into_data() {
                Ok(d) => {
                    if data.len() + d.len() > MAX_MESSAGE {
                        return Err("response message too large".to_string());
                    }
                    data.extend_from_slice(&d);
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = t;
                    }
                }
            }
        }
        match grpc_status(&trailers) {
            Some(0) => Ok(Reply::Message(data.freeze())),
            Some(code) => Ok(Reply::Status(code, grpc_message(&trailers))),
            None => Ok(Reply::Status(
                13,
                "server closed the stream without sending trailers".into(),
            )),
        }
    };
    let exchange = async {
        tokio::pin!(call);
        tokio::pin!(conn);
        tokio::select! {
            r = &mut call => r,
            c = &mut conn => match c {
                Err(e) => Err(e.to_string()),
                Ok(()) => call.await,
            },
        }
    };
    let reply = match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => return rpc_failure(DEADLINE_EXCEEDED, "", timeout),
        Ok(Err(e)) => return rpc_failure(14, &e, timeout),
        Ok(Ok(r)) => r,
    };
    match reply {
        Reply::HttpStatus(status) => rpc_failure(
            http_status_code(status),
            &format!("unexpected HTTP status code received from server: {status}"),
            timeout,
        ),
        Reply::Status(code, msg) => rpc_failure(code, &msg, timeout),
        Reply::Message(data) => match decode_response(data) {
            Err(e) => rpc_failure(13, &e, timeout),
            Ok(SERVING) => ProbeResult::Success,
            Ok(status) => {
                let name = usize::try_from(status)
                    .ok()
                    .and_then(|i| SERVING_STATUS.get(i))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| status.to_string());
                ProbeResult::Failure(format!("service unhealthy (responded with {name:?})"))
            }
        },
    }
}

enum Reply {
    HttpStatus(u16),
    Status(u32, String),
    Message(Bytes),
}

/// Upstream's messages for a failed RPC.
fn rpc_failure(code: u32, message: &str, timeout: Duration) -> ProbeResult {
    ProbeResult::Failure(match code {
        UNIMPLEMENTED => format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        ),
        DEADLINE_EXCEEDED => format!("timeout: health rpc did not complete within {timeout:?}"),
        _ => {
            let name = usize::try_from(code)
                .ok()
                .and_then(|i| CODE_NAMES.get(i))
                .copied()
                .unwrap_or("Unknown");
            format!("error: health rpc probe failed: rpc error: code = {name} desc = {message}")
        }
    })
}

/// grpc-go's mapping of a non-200 HTTP status to a gRPC code.
fn http_status_code(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// grpc-message, percent-decoded as the protocol specifies.
fn grpc_message(headers: &HeaderMap) -> String {
    let Some(raw) = headers.get("grpc-message").map(|v| v.as_bytes()) else {
        return String::new();
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A length-prefixed HealthCheckRequest{service = 1}.
fn encode_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + msg.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(msg.len() as u32);
    framed.put_slice(&msg);
    framed.freeze()
}

/// The `status` (field 1) of a length-prefixed HealthCheckResponse; 0 (UNKNOWN) when absent.
fn decode_response(mut data: Bytes) -> Result<u64, String> {
    if data.len() < 5 {
        return Err("response message missing".into());
    }
    if data.get_u8() != 0 {
        return Err("compressed response not supported".into());
    }
    let len = data.get_u32() as usize;
    if data.len() < len {
        return Err("response message truncated".into());
    }
    let mut msg = data.split_to(len);
    let mut status = 0;
    while msg.has_remaining() {
        let key = get_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 1) => skip(&mut msg, 8)?,
            (_, 2) => {
                let n = usize::try_from(get_varint(&mut msg)?).map_err(|e| e.to_string())?;
                skip(&mut msg, n)?;
            }
            (_, 5) => skip(&mut msg, 4)?,
            (_, wire) => return Err(format!("unsupported protobuf wire type {wire}")),
        }
    }
    Ok(status)
}

fn skip(buf: &mut Bytes, n: usize) -> Result<(), String> {
    if buf.remaining() < n {
        return Err("protobuf field truncated".into());
    }
    buf.advance(n);
    Ok(())
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return Err("protobuf varint truncated".into());
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("protobuf varint too long".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("db")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
    }

    #[test]
    fn response_decoding() {
        assert_eq!(decode_response(Bytes::from_static(&[0, 0, 0, 0, 0])), Ok(0));
        assert_eq!(
            decode_response(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1])),
            Ok(1)
        );
        // Unknown fields are skipped.
        assert_eq!(
            decode_response(Bytes::from_static(&[
                0, 0, 0, 0, 6, 0x12, 2, b'x', b'y', 0x08, 2
            ])),
            Ok(2)
        );
        assert!(decode_response(Bytes::from_static(&[0, 0, 0, 0, 3, 0x08])).is_err());
    }

    #[test]
    fn message_decoding() {
        let mut h = HeaderMap::new();
        h.insert("grpc-message", "unknown%20service%zz".parse().unwrap());
        assert_eq!(grpc_message(&h), "unknown service%zz");
    }
}
