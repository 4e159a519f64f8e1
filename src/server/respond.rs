//! Answers the gateway writes itself: request ids, local responses (mock
//! answers, cache hits) and gateway errors, queued in the connection's
//! write buffer.

use super::conn::{Conn, RequestInfo};
use super::shard::Shard;
use crate::config::Snapshot;
use crate::http::write::{self, LocalResponse};
use crate::http::{BodyKind, Version};

/// Longest client-supplied request id accepted with `trust_request_id`.
const MAX_REQUEST_ID: usize = 128;

/// The request id of the current request.
pub(super) struct RequestId {
    bytes: [u8; MAX_REQUEST_ID],
    len: usize,
}

impl RequestId {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// A client's id, if it is sane: 1 to 128 visible ASCII characters.
    pub(super) fn from_client(v: &[u8]) -> Option<RequestId> {
        if v.is_empty() || v.len() > MAX_REQUEST_ID || !v.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut id = RequestId {
            bytes: [0; MAX_REQUEST_ID],
            len: v.len(),
        };
        id.bytes[..v.len()].copy_from_slice(v);
        Some(id)
    }

    /// A new UUID-form id from the shard's generator.
    pub(super) fn generated(shard: &Shard) -> RequestId {
        let mut uuid = [0u8; 36];
        shard.request_id(&mut uuid);
        let mut id = RequestId {
            bytes: [0; MAX_REQUEST_ID],
            len: 36,
        };
        id.bytes[..36].copy_from_slice(&uuid);
        id
    }
}

impl Conn {
    pub(super) fn local_response(
        &mut self,
        snap: &Snapshot,
        resp: &LocalResponse<'_>,
        info: RequestInfo,
        rid: &RequestId,
    ) {
        let meta = write::ResponseMeta {
            client: info.version,
            keep_alive: info.keep_alive,
            request_id_header: &snap.server.request_id_header,
            request_id: rid.as_bytes(),
        };
        self.exch.status = resp.status;
        let shard = self.shard.clone();
        shard.with_date(|date| {
            write::local_response(&mut self.wbuf, resp, date, &meta, info.head_request)
        });
    }

    /// Counts and queues an error the gateway produced for this request.
    pub(super) fn gateway_error(
        &mut self,
        snap: &Snapshot,
        status: u16,
        info: RequestInfo,
        keep_alive: bool,
        rid: &RequestId,
    ) {
        self.exch.error = Some(write::error_message(status));
        self.error_with_id(
            snap,
            status,
            info.version,
            keep_alive,
            info.head_request,
            rid,
        );
    }

    /// Queues a gateway error response for the current request.
    pub(super) fn error_with_id(
        &mut self,
        snap: &Snapshot,
        status: u16,
        version: Version,
        keep_alive: bool,
        head_request: bool,
        rid: &RequestId,
    ) {
        let resp = LocalResponse {
            status,
            headers: write::error_headers(status),
            body: write::error_body(status),
        };
        let info = RequestInfo {
            version,
            head_request,
            keep_alive,
            body: BodyKind::None,
            expect_continue: false,
            idempotent: false,
            upgrade: false,
        };
        self.local_response(snap, &resp, info, rid);
    }

    /// Counts and queues an error for a request whose head could not be
    /// parsed (or did not arrive in time): HTTP/1.1, then close.
    pub(super) fn error_response(&mut self, snap: &Snapshot, status: u16) {
        self.exch.error = Some(write::error_message(status));
        let rid = RequestId::generated(&self.shard);
        self.error_with_id(snap, status, Version::Http11, false, false, &rid);
    }
}
