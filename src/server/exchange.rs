//! What one request did: its record while it runs ([`Exch`]), the fields
//! its access log line needs ([`LogScratch`]), and, when it ends, its
//! metrics and log line (`Conn::finish_exchange`).

use std::time::Duration;

use super::conn::{Conn, RequestId};
use crate::config::Snapshot;
use crate::http::request::RequestHead;
use crate::http::{HeaderKind, Version};
use crate::observe::access_log::LogRecord;
use crate::observe::counters::Exchange;
use crate::observe::latency_clock;
use crate::observe::metrics::UNMATCHED;

/// Request fields an access log line needs, copied out of the read buffer
/// before the head is consumed (only for stages that log).
#[derive(Debug, Default)]
pub(super) struct LogScratch {
    buf: Vec<u8>,
    rid: std::ops::Range<usize>,
    method: std::ops::Range<usize>,
    path: std::ops::Range<usize>,
    user_agent: Option<std::ops::Range<usize>>,
    host: Option<std::ops::Range<usize>>,
    key: Option<crate::auth::api_key::KeyId>,
    http10: bool,
}

impl LogScratch {
    fn put(&mut self, v: &[u8]) -> std::ops::Range<usize> {
        let start = self.buf.len();
        self.buf.extend_from_slice(v);
        start..self.buf.len()
    }

    fn get(&self, r: &std::ops::Range<usize>) -> &[u8] {
        self.buf.get(r.clone()).unwrap_or_default()
    }
}

/// What one request did: filled in as it runs, recorded when it ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exch {
    /// Raw reading of the latency clock (`observe::latency_clock`).
    pub start: u64,
    /// The response status (0: none was written).
    pub status: u16,
    pub metric: u32,
    pub bytes_in: u64,
    /// `Conn::produced` when the request started.
    pub out_mark: u64,
    /// Time to the backend's response head, and its status.
    pub integration: Option<(Duration, u16)>,
    /// The message of an error the gateway answered with.
    pub error: Option<&'static str>,
    /// Answered from the cache (`Some(true)`) or looked up and missed.
    pub cache: Option<bool>,
    /// The route counter whose stage logs this request.
    pub log: Option<u32>,
    /// Sent to the stage's canary.
    pub canary: bool,
}

impl Exch {
    pub(super) fn new(start: u64, bytes_in: u64, out_mark: u64) -> Exch {
        Exch {
            start,
            status: 0,
            metric: UNMATCHED,
            bytes_in,
            out_mark,
            integration: None,
            error: None,
            cache: None,
            log: None,
            canary: false,
        }
    }
}

impl LogScratch {
    /// Copies the fields of the request at the buffer front (`buf`,
    /// parsed into `head`) that its log line needs.
    pub(super) fn capture(
        &mut self,
        snap: &Snapshot,
        head: &RequestHead,
        buf: &[u8],
        rid: &RequestId,
    ) {
        self.buf.clear();
        self.rid = self.put(rid.as_bytes());
        self.method = self.put(head.method.of(buf));
        self.path = self.put(head.path(buf));
        self.host = head.host.map(|h| self.put(h.of(buf)));
        self.user_agent = head
            .headers
            .iter()
            .find(|h| h.name.of(buf).eq_ignore_ascii_case(b"user-agent"))
            .map(|h| self.put(h.value.of(buf)));
        self.key = head
            .header(HeaderKind::ApiKey)
            .and_then(|h| snap.keys.lookup(h.value.of(buf)));
        self.http10 = head.version == Version::Http10;
    }
}

impl Conn {
    /// Bytes produced for the client so far: sent, queued or pending.
    pub(super) fn produced(&self) -> u64 {
        self.sent + self.wbuf.len() as u64 + self.pending.as_ref().map_or(0, |p| p.len() as u64)
    }

    /// Counts the request that just ended, and writes its access log line
    /// if its stage logs.
    pub(super) fn finish_exchange(&mut self, snap: &Snapshot) {
        let e = &self.exch;
        let status = if e.status == 0 {
            // The client went away before an answer (NGINX's 499).
            499
        } else {
            e.status
        };
        let exchange = Exchange {
            status,
            bytes_in: e.bytes_in,
            bytes_out: self.produced().saturating_sub(e.out_mark),
            latency: latency_clock().delta(e.start, latency_clock().raw()),
            integration: e.integration.map(|(d, _)| d),
        };
        self.shard.counters.record(e.metric, &exchange);
        if let Some(counter) = e.log {
            self.log_line(snap, counter, &exchange);
        }
    }

    /// Renders the access log line of the request that just ended into
    /// the shard's buffer for its stage's destination.
    fn log_line(&self, snap: &Snapshot, counter: u32, x: &Exchange) {
        let Some(Some(stage_log)) = snap.route_logs.get(counter as usize) else {
            return;
        };
        let labels = snap.route_labels.get(counter as usize);
        let Some(l) = self.log.as_deref() else {
            return;
        };
        let e = &self.exch;
        let rec = LogRecord {
            request_id: l.get(&l.rid),
            source_ip: self.peer.ip,
            time: self.shard.wall_time_of(e.start),
            method: l.get(&l.method),
            route_key: labels.map(|r| r.route.as_str()),
            path: l.get(&l.path),
            status: x.status,
            http10: l.http10,
            response_length: x.bytes_out,
            latency: x.latency,
            integration_latency: e.integration.map(|(d, _)| d),
            integration_status: e.integration.map(|(_, s)| s),
            error_message: e.error,
            user_agent: l.user_agent.as_ref().map(|r| l.get(r)),
            stage: labels.map(|r| r.stage.as_str()),
            api: labels.map(|r| r.api.as_str()),
            host: l.host.as_ref().map(|r| l.get(r)),
            api_key_id: l.key.map(|k| snap.keys.name(k)),
            cache: e.cache,
            canary: e.canary,
            client_cert: self.tls.as_ref().and_then(|t| t.client_cert.as_ref()),
        };
        let Some(dest) = snap.log_destinations.get(stage_log.sink as usize) else {
            return;
        };
        let mut logs = self.shard.logs.borrow_mut();
        // The index holds unless a reload changed the destinations while
        // this request ran on the older snapshot.
        let i = if logs
            .get(stage_log.sink as usize)
            .is_some_and(|(d, _)| d == dest)
        {
            Some(stage_log.sink as usize)
        } else {
            logs.iter().position(|(d, _)| d == dest)
        };
        if let Some((_, out)) = i.and_then(|i| logs.get_mut(i)) {
            out.line(|buf| stage_log.format.render(&rec, buf));
        }
    }
}
