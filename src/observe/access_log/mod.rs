//! Access logs in the manner of Amazon API Gateway: a format compiled once
//! at config load from `$context.*` variables (or a `clf`, `json` or `csv`
//! preset), rendered per request into a shard-local buffer, and written to
//! stdout or a file by one writer thread per destination.
//!
//! # Formatting (sans I/O)
//!
//! [`Format::parse`] compiles a template into literal pieces and variables;
//! [`Format::render`] appends exactly one line for a [`LogRecord`] to a
//! `Vec<u8>`, allocating nothing besides growing that vector. The `json`
//! preset renders through the same pieces written out in line (no
//! dispatch per variable: 0.13 µs a line instead of 0.22,
//! `bench/access_log.rs`). Variable names are matched longest first
//! (`$context.requestTimeEpoch` before `$context.requestTime`); a name
//! followed directly by a letter, digit or `_` (`$context.statusX`), an
//! unknown name or a `$` that does not start a `$context.` variable is
//! rejected with its name, as is a template with
//! a line break in it. Absent values render as `-`.
//!
//! | variable | value |
//! |---|---|
//! | `$context.requestId`, `$context.extendedRequestId` | request id |
//! | `$context.identity.sourceIp` | client address (IPv4-mapped IPv6 shown as IPv4) |
//! | `$context.requestTime` | request start, CLF, UTC: `01/Dec/2025:04:04:25 +0000` |
//! | `$context.requestTimeEpoch` | request start, epoch milliseconds |
//! | `$context.httpMethod` | method |
//! | `$context.routeKey` | matched route (`GET /pets/{id}`) |
//! | `$context.path` | request path as sent (stage included), no query |
//! | `$context.status` | response status |
//! | `$context.protocol` | `HTTP/1.1` or `HTTP/1.0` |
//! | `$context.responseLength` | bytes sent for the response (head and body) |
//! | `$context.responseLatency` | whole request, milliseconds |
//! | `$context.integrationLatency`, `$context.integration.latency` | backend call, milliseconds |
//! | `$context.integrationStatus`, `$context.integration.status` | backend status |
//! | `$context.error.message` | gateway error message |
//! | `$context.identity.userAgent`, `$context.userAgent` | `User-Agent` |
//! | `$context.stage` | stage name |
//! | `$context.apiId` | API name |
//! | `$context.domainName` | `Host` header |
//! | `$context.identity.apiKeyId` | name of the API key presented |
//! | `$context.cacheStatus` | `hit`, `miss` (tollgate extension) |
//! | `$context.isCanaryRequest` | `true` when the stage's canary served it, else `false` |
//! | `$context.identity.clientCert.subjectDN`, `.issuerDN`, `.serialNumber`, `.validity.notBefore`, `.validity.notAfter` | the verified client certificate (mutual TLS) |
//!
//! # Escaping
//!
//! Most values come from the client (path, method, user agent, host) and
//! may hold any byte: quotes, backslashes, CR/LF, control bytes, invalid
//! UTF-8. None of them can break a line or its format:
//!
//! - **default** (`clf` and templates not starting with `{`), as NGINX's
//!   `escape=default`: `"`, `\`, bytes below 0x20, 0x7f and bytes from
//!   0x80 up are written as `\xHH` (upper-case hex), so the line is plain
//!   ASCII and the escaping can be undone byte for byte.
//! - **JSON** (the `json` preset and templates whose first non-space
//!   character is `{`): values are JSON string contents: `\"`, `\\`,
//!   `\n`, `\r`, `\t`, `\u00XX` for other control bytes and 0x7f; valid
//!   UTF-8 passes through and each invalid sequence becomes `\ufffd` (as
//!   `String::from_utf8_lossy` does). Where a variable stands is worked
//!   out when the template is compiled: a variable that is a whole JSON
//!   string (`"$context.path"`) or stands outside a string
//!   (`$context.status`) renders `null` when absent (the quotes go too);
//!   outside a string, text values are quoted and numbers are bare. A
//!   variable inside a longer string (`"$context.httpMethod $context.path"`)
//!   renders `-` when absent. So as long as the template's own text is
//!   JSON, every line is JSON.
//! - **CSV** (the `csv` preset; RFC 4180): a value holding `,`, `"`, CR or
//!   LF is quoted, `"` doubled; control bytes, `\` and bytes of invalid
//!   UTF-8 are written as `\xHH`, valid UTF-8 passes through.
//!
//! # Time
//!
//! `$context.requestTime` is the CLF text of the request's second. Many
//! requests share a second, so each thread keeps the last second it
//! rendered ([`TimeCache`], one entry): the date arithmetic runs once per
//! second per shard, every other request copies 26 bytes.
//!
//! # Writing: per-shard buffers and a writer thread
//!
//! A shard is one thread running many connections; a `write(2)` to a slow
//! disk (or a stdout piped into a stalled collector) would stall all of
//! them. So a shard never touches the destination: each shard appends its
//! lines to its own [`ShardLog`] buffer (no lock, no atomic per line) and
//! hands the filled buffer over a bounded channel to the destination's
//! writer thread ([`AccessLog`], thread `tollgate-log`) at the shard's tick
//! or when the buffer passes a batch size (64 KiB). The writer hands the
//! batch to its sink (stdout: one `write_all`; a file: staged and appended
//! in large `O_DIRECT` writes, see `file.rs`) and sends the emptied buffer
//! back to its shard, so in steady state no buffer is allocated.
//!
//! **Pacing.** An idle writer waits on the channel, so the first batch
//! after a quiet spell is written at once. While batches keep coming it
//! naps 25 ms between passes over the queue instead: a thread asleep on a
//! timer is not registered as a waiter on the channel, so handing a batch
//! over wakes nobody. Under load that is ~40 wake-ups a second instead of
//! one per batch (context switches per proxied request 0.027 → 0.006 with
//! the writer on the shard's core; 25 ms instead of 10 ms cut the
//! writer's CPU per line by a fifth, `docs/performance.md`); a nap that
//! finds the queue empty returns the writer to waiting on the channel.
//! The reopen flag is looked at before each batch, so a reopen is not
//! held up by a long pass. The queue (64 batches, 4 MiB) holds ~65 ms of
//! lines at 60 MB/s, and each shard's 1 MiB cap more on top.
//!
//! **Drop policy.** Handing a batch over never blocks: if the writer's
//! queue is full, the shard keeps buffering up to its cap (1 MiB); past
//! the cap, lines are dropped and counted ([`AccessLog::dropped`]), as are
//! lines of a batch the writer failed to write and lines sent after the
//! writer stopped. Request handling never waits for the log; once every
//! shard has flushed and the writer has stopped, `written + dropped` is the
//! number of lines the shards offered.
//!
//! **Rotation.** [`AccessLog::reopen`] (on `SIGUSR1`, after logrotate moved
//! the file) makes the writer reopen the path before its next batch, and
//! at least every 500 ms when idle: new lines go to a new file at the
//! path, the renamed file keeps the old ones.

use std::cell::RefCell;
use std::io::Write;
use std::mem;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Record
// ---------------------------------------------------------------------------

/// What one request leaves in the access log. Borrowed from the request
/// and response; built after the response is sent.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    pub request_id: &'a [u8],
    pub source_ip: IpAddr,
    /// Request start.
    pub time: SystemTime,
    pub method: &'a [u8],
    /// The matched route (`GET /pets/{id}`); `None` if none matched.
    pub route_key: Option<&'a str>,
    /// Request path as sent, stage included, without the query.
    pub path: &'a [u8],
    pub status: u16,
    /// Protocol `HTTP/1.0`, else `HTTP/1.1`.
    pub http10: bool,
    /// Bytes sent for the response (head and body).
    pub response_length: u64,
    /// Whole request.
    pub latency: Duration,
    /// The backend call, if there was one.
    pub integration_latency: Option<Duration>,
    /// The backend's status, if there was a backend response.
    pub integration_status: Option<u16>,
    pub error_message: Option<&'a str>,
    pub user_agent: Option<&'a [u8]>,
    pub stage: Option<&'a str>,
    /// The API's name.
    pub api: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a [u8]>,
    /// Name of the API key presented, if any.
    pub api_key_id: Option<&'a str>,
    /// `Some(true)` a cache hit, `Some(false)` a miss, `None` not cached.
    pub cache: Option<bool>,
    /// Sent to the stage's canary.
    pub canary: bool,
    /// The verified client certificate (mutual TLS), if one was sent.
    pub client_cert: Option<&'a crate::tls::ClientCert>,
}

// ---------------------------------------------------------------------------
// Format
// ---------------------------------------------------------------------------

/// Why a format was refused at config load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("access log format is empty")]
    Empty,
    #[error("unknown access log variable `{0}`")]
    UnknownVariable(String),
    #[error("access log format contains a line break (each request logs one line)")]
    LineBreak,
    #[error("access log format starts with `{{` (JSON) but leaves a string unterminated")]
    UnterminatedJsonString,
}

/// A variable of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    RequestId,
    SourceIp,
    RequestTime,
    RequestTimeEpoch,
    HttpMethod,
    RouteKey,
    Path,
    Status,
    Protocol,
    ResponseLength,
    ResponseLatency,
    IntegrationLatency,
    IntegrationStatus,
    ErrorMessage,
    UserAgent,
    Stage,
    ApiId,
    DomainName,
    ApiKeyId,
    CacheStatus,
    IsCanaryRequest,
    CertSubject,
    CertIssuer,
    CertSerial,
    CertNotBefore,
    CertNotAfter,
}

/// Variable names after `$context.`, aliases included.
const VARS: &[(&str, Var)] = &[
    ("requestId", Var::RequestId),
    ("extendedRequestId", Var::RequestId),
    ("identity.sourceIp", Var::SourceIp),
    ("requestTime", Var::RequestTime),
    ("requestTimeEpoch", Var::RequestTimeEpoch),
    ("httpMethod", Var::HttpMethod),
    ("routeKey", Var::RouteKey),
    ("path", Var::Path),
    ("status", Var::Status),
    ("protocol", Var::Protocol),
    ("responseLength", Var::ResponseLength),
    ("responseLatency", Var::ResponseLatency),
    ("integrationLatency", Var::IntegrationLatency),
    ("integration.latency", Var::IntegrationLatency),
    ("integrationStatus", Var::IntegrationStatus),
    ("integration.status", Var::IntegrationStatus),
    ("error.message", Var::ErrorMessage),
    ("identity.userAgent", Var::UserAgent),
    ("userAgent", Var::UserAgent),
    ("stage", Var::Stage),
    ("apiId", Var::ApiId),
    ("domainName", Var::DomainName),
    ("identity.apiKeyId", Var::ApiKeyId),
    ("cacheStatus", Var::CacheStatus),
    ("isCanaryRequest", Var::IsCanaryRequest),
    ("identity.clientCert.subjectDN", Var::CertSubject),
    ("identity.clientCert.issuerDN", Var::CertIssuer),
    ("identity.clientCert.serialNumber", Var::CertSerial),
    ("identity.clientCert.validity.notBefore", Var::CertNotBefore),
    ("identity.clientCert.validity.notAfter", Var::CertNotAfter),
];

const PREFIX: &str = "$context.";

/// `clf` preset: NGINX/Amazon API Gateway common log format, request id
/// last.
const CLF: &str = "$context.identity.sourceIp - - [$context.requestTime] \
\"$context.httpMethod $context.path $context.protocol\" \
$context.status $context.responseLength $context.requestId";

/// `json` preset.
const JSON: &str = "{\"requestId\":\"$context.requestId\",\
\"ip\":\"$context.identity.sourceIp\",\
\"requestTime\":\"$context.requestTime\",\
\"httpMethod\":\"$context.httpMethod\",\
\"routeKey\":\"$context.routeKey\",\
\"path\":\"$context.path\",\
\"status\":$context.status,\
\"protocol\":\"$context.protocol\",\
\"responseLength\":$context.responseLength,\
\"responseLatency\":$context.responseLatency,\
\"integrationLatency\":$context.integrationLatency,\
\"integrationStatus\":$context.integrationStatus,\
\"errorMessage\":\"$context.error.message\",\
\"userAgent\":\"$context.identity.userAgent\",\
\"stage\":\"$context.stage\",\
\"api\":\"$context.apiId\"}";

/// `csv` preset: the `json` preset's fields in the same order.
const CSV: &str = "$context.requestId,$context.identity.sourceIp,\
$context.requestTime,$context.httpMethod,$context.routeKey,$context.path,\
$context.status,$context.protocol,$context.responseLength,\
$context.responseLatency,$context.integrationLatency,\
$context.integrationStatus,$context.error.message,\
$context.identity.userAgent,$context.stage,$context.apiId";

/// How the template is escaped as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Default,
    Json,
    Csv,
}

/// How one variable is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// NGINX `escape=default`, absent `-`.
    Default,
    /// RFC 4180 field, absent `-`.
    Csv,
    /// Inside a longer JSON string: escaped contents, absent `-`.
    JsonIn,
    /// The whole of a JSON string (its quotes were taken out of the
    /// literals): `"value"`, absent `null`.
    JsonWhole,
    /// Outside a JSON string: numbers bare, text quoted, absent `null`.
    JsonBare,
}

/// Literal text, then a variable (one dispatch per variable, not per
/// piece of text).
#[derive(Debug, Clone)]
struct Piece {
    lit: Box<[u8]>,
    var: Var,
    emit: Emit,
}

/// A compiled access log format; shared read-only by all shards.
#[derive(Debug, Clone)]
pub struct Format {
    pieces: Box<[Piece]>,
    /// Literal text after the last variable, and the newline.
    tail: Box<[u8]>,
    /// The `json` preset: rendered by [`render_json_preset`], the same
    /// pieces unrolled.
    json_preset: bool,
}

enum Raw {
    Lit(Vec<u8>),
    Var(Var),
}

impl Format {
    /// Compiles `"clf"`, `"json"`, `"csv"` (presets) or a template with
    /// `$context.NAME` variables; text between variables is literal. A
    /// template whose first non-space character is `{` is JSON.
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        match text {
            "clf" => compile(CLF, Mode::Default),
            "json" => compile(JSON, Mode::Json).map(|f| Format {
                json_preset: true,
                ..f
            }),
            "csv" => compile(CSV, Mode::Csv),
            _ if text.trim_start().starts_with('{') => compile(text, Mode::Json),
            _ => compile(text, Mode::Default),
        }
    }

    /// Appends exactly one line (ending in `'\n'`) for `rec` to `out`. No
    /// allocation besides growing `out`.
    pub fn render(&self, rec: &LogRecord<'_>, out: &mut Vec<u8>) {
        if self.json_preset {
            render_json_preset(rec, out);
            return;
        }
        self.render_pieces(rec, out);
    }

    /// The general renderer: one dispatch on the variable and one on its
    /// escaping per piece.
    fn render_pieces(&self, rec: &LogRecord<'_>, out: &mut Vec<u8>) {
        for piece in self.pieces.iter() {
            out.extend_from_slice(&piece.lit);
            emit_value(value(piece.var, rec), piece.emit, out);
        }
        out.extend_from_slice(&self.tail);
    }
}

fn compile(text: &str, mode: Mode) -> Result<Format, FormatError> {
    if text.trim().is_empty() {
        return Err(FormatError::Empty);
    }
    if text.contains(['\n', '\r']) {
        return Err(FormatError::LineBreak);
    }
    let raw = tokenize(text)?;
    let emits = match mode {
        Mode::Default => vec![Emit::Default; raw.len()],
        Mode::Csv => vec![Emit::Csv; raw.len()],
        Mode::Json => json_placement(&raw)?,
    };
    // JsonWhole takes the quotes around it out of the literals next to it.
    let mut trim = vec![(0usize, 0usize); raw.len()];
    for (i, e) in emits.iter().enumerate() {
        if *e == Emit::JsonWhole {
            trim[i - 1].1 = 1;
            trim[i + 1].0 = 1;
        }
    }
    let mut pieces = Vec::with_capacity(raw.len());
    let mut lit = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        match r {
            Raw::Lit(t) => {
                let (front, back) = trim[i];
                lit.extend_from_slice(&t[front..t.len() - back]);
            }
            Raw::Var(var) => pieces.push(Piece {
                lit: mem::take(&mut lit).into(),
                var,
                emit: emits[i],
            }),
        }
    }
    lit.push(b'\n');
    Ok(Format {
        pieces: pieces.into(),
        tail: lit.into(),
        json_preset: false,
    })
}

/// Splits a template into literals and variables.
fn tokenize(text: &str) -> Result<Vec<Raw>, FormatError> {
    let mut raw = Vec::new();
    let mut lit = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        lit.extend_from_slice(&rest.as_bytes()[..at]);
        rest = &rest[at..];
        let (var, len) = variable(rest)?;
        if !lit.is_empty() {
            raw.push(Raw::Lit(mem::take(&mut lit)));
        }
        raw.push(Raw::Var(var));
        rest = &rest[len..];
    }
    lit.extend_from_slice(rest.as_bytes());
    if !lit.is_empty() {
        raw.push(Raw::Lit(lit));
    }
    Ok(raw)
}

/// The variable at the start of `s` (which starts with `$`) and its
/// length: the longest known name, not followed by a letter, digit or `_`.
fn variable(s: &str) -> Result<(Var, usize), FormatError> {
    let unknown = || {
        let after = &s[1..];
        let mut len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(after.len());
        if len == 0 {
            // `${...}` or the like: show up to the next space.
            len = after.find(char::is_whitespace).unwrap_or(after.len());
            while len > 40 || !after.is_char_boundary(len) {
                len -= 1;
            }
        }
        let name = &s[..1 + len];
        let name = if name.len() > 1 {
            name.trim_end_matches('.')
        } else {
            name
        };
        FormatError::UnknownVariable(name.to_string())
    };
    let Some(after) = s.strip_prefix(PREFIX) else {
        return Err(unknown());
    };
    let best = VARS
        .iter()
        .filter(|(name, _)| after.starts_with(name))
        .max_by_key(|(name, _)| name.len());
    match best {
        Some((name, var)) => {
            let next = after[name.len()..].chars().next();
            if next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                Err(unknown())
            } else {
                Ok((*var, PREFIX.len() + name.len()))
            }
        }
        None => Err(unknown()),
    }
}

/// Where each variable of a JSON template stands: outside a string, as a
/// whole string (`"$context.path"`) or inside a longer one. Entries for
/// literals are unused.
fn json_placement(raw: &[Raw]) -> Result<Vec<Emit>, FormatError> {
    let mut emits = vec![Emit::JsonBare; raw.len()];
    let mut in_str = false;
    let mut escaped = false;
    // The last byte of the previous piece opened a string.
    let mut just_opened = false;
    for (i, r) in raw.iter().enumerate() {
        match r {
            Raw::Lit(t) => {
                just_opened = false;
                for &b in t {
                    if in_str {
                        just_opened = false;
                        if escaped {
                            escaped = false;
                        } else if b == b'\\' {
                            escaped = true;
                        } else if b == b'"' {
                            in_str = false;
                        }
                    } else {
                        just_opened = b == b'"';
                        in_str = just_opened;
                    }
                }
            }
            Raw::Var(_) => {
                let closes_next = matches!(
                    raw.get(i + 1),
                    Some(Raw::Lit(t)) if t.first() == Some(&b'"')
                );
                emits[i] = if !in_str {
                    Emit::JsonBare
                } else if just_opened && closes_next {
                    Emit::JsonWhole
                } else {
                    Emit::JsonIn
                };
                just_opened = false;
                escaped = false;
            }
        }
    }
    if in_str {
        return Err(FormatError::UnterminatedJsonString);
    }
    Ok(emits)
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// One variable's value for one record.
enum Value<'a> {
    Absent,
    /// Bytes that may need escaping.
    Text(&'a [u8]),
    Num(u64),
    Ip(IpAddr),
    /// Epoch seconds, rendered as CLF time.
    Time(u64),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[inline(always)]
fn value<'a>(var: Var, rec: &LogRecord<'a>) -> Value<'a> {
    let text = |t: Option<&'a [u8]>| t.map_or(Value::Absent, Value::Text);
    let str_ = |t: Option<&'a str>| t.map_or(Value::Absent, |s| Value::Text(s.as_bytes()));
    let since_epoch = || rec.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    match var {
        Var::RequestId => Value::Text(rec.request_id),
        Var::SourceIp => Value::Ip(rec.source_ip.to_canonical()),
        Var::RequestTime => Value::Time(since_epoch().as_secs()),
        Var::RequestTimeEpoch => Value::Num(millis(since_epoch())),
        Var::HttpMethod => Value::Text(rec.method),
        Var::RouteKey => str_(rec.route_key),
        Var::Path => Value::Text(rec.path),
        Var::Status => Value::Num(u64::from(rec.status)),
        Var::Protocol => Value::Text(if rec.http10 { b"HTTP/1.0" } else { b"HTTP/1.1" }),
        Var::ResponseLength => Value::Num(rec.response_length),
        Var::ResponseLatency => Value::Num(millis(rec.latency)),
        Var::IntegrationLatency => rec
            .integration_latency
            .map_or(Value::Absent, |d| Value::Num(millis(d))),
        Var::IntegrationStatus => rec
            .integration_status
            .map_or(Value::Absent, |s| Value::Num(u64::from(s))),
        Var::ErrorMessage => str_(rec.error_message),
        Var::UserAgent => text(rec.user_agent),
        Var::Stage => str_(rec.stage),
        Var::ApiId => str_(rec.api),
        Var::DomainName => text(rec.host),
        Var::ApiKeyId => str_(rec.api_key_id),
        Var::CacheStatus => match rec.cache {
            Some(true) => Value::Text(b"hit"),
            Some(false) => Value::Text(b"miss"),
            None => Value::Absent,
        },
        Var::IsCanaryRequest => Value::Text(if rec.canary { b"true" } else { b"false" }),
        Var::CertSubject => cert(rec, |c| &c.subject),
        Var::CertIssuer => cert(rec, |c| &c.issuer),
        Var::CertSerial => cert(rec, |c| &c.serial),
        Var::CertNotBefore => cert(rec, |c| &c.not_before),
        Var::CertNotAfter => cert(rec, |c| &c.not_after),
    }
}

/// A field of the record's client certificate.
fn cert<'a>(
    rec: &LogRecord<'a>,
    field: impl Fn(&'a crate::tls::ClientCert) -> &'a String,
) -> Value<'a> {
    rec.client_cert
        .map_or(Value::Absent, |c| Value::Text(field(c).as_bytes()))
}

#[inline(always)]
fn emit_value(v: Value<'_>, emit: Emit, out: &mut Vec<u8>) {
    match (v, emit) {
        (Value::Absent, Emit::JsonWhole | Emit::JsonBare) => out.extend_from_slice(b"null"),
        (Value::Absent, _) => out.push(b'-'),
        (Value::Num(n), Emit::JsonWhole) => {
            out.push(b'"');
            push_u64(n, out);
            out.push(b'"');
        }
        (Value::Num(n), _) => push_u64(n, out),
        (Value::Text(t), Emit::Default) => escape_default(t, out),
        (Value::Text(t), Emit::Csv) => escape_csv(t, out),
        (Value::Text(t), Emit::JsonIn) => escape_json(t, out),
        (Value::Text(t), Emit::JsonWhole | Emit::JsonBare) => {
            out.push(b'"');
            escape_json(t, out);
            out.push(b'"');
        }
        // Addresses and times are plain ASCII without quotes, backslashes,
        // commas or control bytes: no escaping in any mode.
        (Value::Ip(ip), Emit::JsonWhole | Emit::JsonBare) => {
            out.push(b'"');
            push_ip(ip, out);
            out.push(b'"');
        }
        (Value::Ip(ip), _) => push_ip(ip, out),
        (Value::Time(secs), Emit::JsonWhole | Emit::JsonBare) => {
            out.push(b'"');
            push_clf_time(secs, out);
            out.push(b'"');
        }
        (Value::Time(secs), _) => push_clf_time(secs, out),
    }
}

/// The `json` preset's pieces as [`compile`] makes them (quotes around a
/// whole-string variable taken out of the literals), written out in line:
/// the preset is the format most stages log with, and the general loop's
/// two jump tables per variable cost as much as the rest of its rendering
/// together (`perf annotate` of `bench/access_log.rs`). Here each variable
/// and its escaping are constants, so both dispatches fold away and each
/// literal is a fixed-size copy. `json_preset_unrolled_matches_the_template`
/// and the hostile-bytes property test check it against the general
/// renderer of [`JSON`].
fn render_json_preset(rec: &LogRecord<'_>, out: &mut Vec<u8>) {
    use Emit::{JsonBare as Bare, JsonWhole as Whole};
    // A macro, not a closure: a closure is compiled once for all its
    // calls, with the variable and escaping as run-time arguments again.
    macro_rules! put {
        ($lit:expr, $var:expr, $emit:expr) => {
            out.extend_from_slice($lit);
            emit_value(value($var, rec), $emit, out);
        };
    }
    put!(b"{\"requestId\":", Var::RequestId, Whole);
    put!(b",\"ip\":", Var::SourceIp, Whole);
    put!(b",\"requestTime\":", Var::RequestTime, Whole);
    put!(b",\"httpMethod\":", Var::HttpMethod, Whole);
    put!(b",\"routeKey\":", Var::RouteKey, Whole);
    put!(b",\"path\":", Var::Path, Whole);
    put!(b",\"status\":", Var::Status, Bare);
    put!(b",\"protocol\":", Var::Protocol, Whole);
    put!(b",\"responseLength\":", Var::ResponseLength, Bare);
    put!(b",\"responseLatency\":", Var::ResponseLatency, Bare);
    put!(b",\"integrationLatency\":", Var::IntegrationLatency, Bare);
    put!(b",\"integrationStatus\":", Var::IntegrationStatus, Bare);
    put!(b",\"errorMessage\":", Var::ErrorMessage, Whole);
    put!(b",\"userAgent\":", Var::UserAgent, Whole);
    put!(b",\"stage\":", Var::Stage, Whole);
    put!(b",\"api\":", Var::ApiId, Whole);
    out.extend_from_slice(b"}\n");
}

fn push_u64(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let mut buf = itoa::Buffer::new();
            out.extend_from_slice(buf.format(a).as_bytes());
            for o in [b, c, d] {
                out.push(b'.');
                out.extend_from_slice(buf.format(o).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail; Ipv6Addr's Display formats on
            // the stack.
            let _ = write!(out, "{v6}");
        }
    }
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

fn push_hex_escape(b: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX_UPPER[usize::from(b >> 4)],
        HEX_UPPER[usize::from(b & 15)],
    ]);
}

/// Whether `needs` holds for any byte of `s`: a branch-free pass the
/// compiler vectorizes (predicates combine with `|`, not `||`, for the
/// same reason), several times faster than stopping at the first hit.
#[inline(always)]
fn any_byte(s: &[u8], needs: impl Fn(u8) -> bool) -> bool {
    s.iter().fold(false, |hit, &b| hit | needs(b))
}

/// Copies `s` to `out`, writing each byte for which `needs` holds through
/// `escape` instead. Most values need no escaping at all: they are found
/// clean by one vectorized pass and copied at once; otherwise clean
/// stretches are skipped 16 bytes at a time before looking at single
/// bytes.
#[inline(always)]
fn escape_with(
    s: &[u8],
    out: &mut Vec<u8>,
    needs: impl Fn(u8) -> bool + Copy,
    mut escape: impl FnMut(u8, &mut Vec<u8>),
) {
    const BLOCK: usize = 16;
    if !any_byte(s, needs) {
        out.extend_from_slice(s);
        return;
    }
    let mut start = 0;
    for (i, block) in s.chunks(BLOCK).enumerate() {
        if !any_byte(block, needs) {
            continue;
        }
        for (j, &b) in block.iter().enumerate() {
            if needs(b) {
                let at = i * BLOCK + j;
                out.extend_from_slice(&s[start..at]);
                escape(b, out);
                start = at + 1;
            }
        }
    }
    out.extend_from_slice(&s[start..]);
}

/// Default escaping (NGINX `escape=default`): `"`, `\`, control bytes,
/// 0x7f and bytes ≥ 0x80 as `\xHH`.
fn escape_default(v: &[u8], out: &mut Vec<u8>) {
    escape_with(
        v,
        out,
        |b| !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\'),
        push_hex_escape,
    );
}

/// For each byte of valid UTF-8: 0 passes through, `u` is written as
/// `\u00XX`, any other value `c` as `\c`.
const JSON_ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x7f] = b'u';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Control bytes, 0x7f, `"` and `\`: escaped in JSON strings and (but
/// for `"`, doubled there) in CSV fields.
#[inline(always)]
fn json_special(b: u8) -> bool {
    (b < 0x20) | (b == 0x7f) | (b == b'"') | (b == b'\\')
}

/// JSON string contents (without the quotes); invalid UTF-8 becomes
/// `\ufffd`, one per maximal invalid sequence (as
/// `String::from_utf8_lossy`).
fn escape_json(v: &[u8], out: &mut Vec<u8>) {
    // The common case: plain ASCII with nothing to escape.
    if !any_byte(v, |b| json_special(b) | (b >= 0x80)) {
        out.extend_from_slice(v);
        return;
    }
    // `from_utf8` checks ASCII a word at a time; `utf8_chunks` goes byte
    // by byte, so it is only for what is not UTF-8.
    match std::str::from_utf8(v) {
        Ok(s) => escape_json_valid(s.as_bytes(), out),
        Err(_) => {
            for chunk in v.utf8_chunks() {
                escape_json_valid(chunk.valid().as_bytes(), out);
                if !chunk.invalid().is_empty() {
                    out.extend_from_slice(b"\\ufffd");
                }
            }
        }
    }
}

/// JSON string contents of valid UTF-8.
fn escape_json_valid(s: &[u8], out: &mut Vec<u8>) {
    escape_with(s, out, json_special, |b, out| {
        match JSON_ESCAPES[usize::from(b)] {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX_LOWER[usize::from(b >> 4)],
                HEX_LOWER[usize::from(b & 15)],
            ]),
            e => out.extend_from_slice(&[b'\\', e]),
        }
    });
}

/// A CSV field (RFC 4180): quoted if it holds `,`, `"`, CR or LF, with
/// `"` doubled; control bytes, 0x7f, `\` and bytes of invalid UTF-8 as
/// `\xHH`.
fn escape_csv(v: &[u8], out: &mut Vec<u8>) {
    // The common case: plain ASCII with nothing to quote or escape.
    if !any_byte(v, |b| json_special(b) | (b == b',') | (b >= 0x80)) {
        out.extend_from_slice(v);
        return;
    }
    // memchr: LLVM turns a four-way comparison into a per-byte loop.
    let quote =
        memchr::memchr3(b',', b'"', b'\n', v).is_some() || memchr::memchr(b'\r', v).is_some();
    if quote {
        out.push(b'"');
    }
    match std::str::from_utf8(v) {
        Ok(s) => escape_csv_valid(s.as_bytes(), out),
        Err(_) => {
            for chunk in v.utf8_chunks() {
                escape_csv_valid(chunk.valid().as_bytes(), out);
                for &b in chunk.invalid() {
                    push_hex_escape(b, out);
                }
            }
        }
    }
    if quote {
        out.push(b'"');
    }
}

/// CSV field contents of valid UTF-8.
fn escape_csv_valid(s: &[u8], out: &mut Vec<u8>) {
    escape_with(s, out, json_special, |b, out| {
        if b == b'"' {
            out.extend_from_slice(b"\"\"");
        } else {
            push_hex_escape(b, out);
        }
    });
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// Length of `01/Dec/2025:04:04:25 +0000`.
const CLF_TIME_LEN: usize = 26;

/// Last second representable with a four-digit year (9999-12-31T23:59:59Z).
const MAX_CLF_SECS: u64 = 253_402_300_799;

/// The CLF text of the last second rendered: most requests of a shard
/// share their second with the previous one.
#[derive(Debug, Clone)]
pub struct TimeCache {
    secs: u64,
    text: [u8; CLF_TIME_LEN],
}

impl Default for TimeCache {
    fn default() -> Self {
        TimeCache::new()
    }
}

impl TimeCache {
    pub const fn new() -> TimeCache {
        TimeCache {
            secs: u64::MAX,
            text: [0; CLF_TIME_LEN],
        }
    }

    /// `01/Dec/2025:04:04:25 +0000` for `secs` since the epoch, UTC
    /// (clamped to year 9999).
    pub fn clf(&mut self, secs: u64) -> &[u8; CLF_TIME_LEN] {
        let secs = secs.min(MAX_CLF_SECS);
        if secs != self.secs {
            self.text = clf_time(secs);
            self.secs = secs;
        }
        &self.text
    }
}

thread_local! {
    static TIME_CACHE: RefCell<TimeCache> = const { RefCell::new(TimeCache::new()) };
}

fn push_clf_time(secs: u64, out: &mut Vec<u8>) {
    TIME_CACHE.with_borrow_mut(|c| out.extend_from_slice(c.clf(secs)));
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Renders `secs` (at most [`MAX_CLF_SECS`]) as CLF time, UTC.
fn clf_time(secs: u64) -> [u8; CLF_TIME_LEN] {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    let two = |n: u64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
    let mut t = [0u8; CLF_TIME_LEN];
    t[0..2].copy_from_slice(&two(day));
    t[2] = b'/';
    t[3..6].copy_from_slice(MONTHS[(month - 1) as usize]);
    t[6] = b'/';
    t[7..9].copy_from_slice(&two(year / 100));
    t[9..11].copy_from_slice(&two(year % 100));
    t[11] = b':';
    t[12..14].copy_from_slice(&two(h));
    t[14] = b':';
    t[15..17].copy_from_slice(&two(m));
    t[17] = b':';
    t[18..20].copy_from_slice(&two(s));
    t[20..26].copy_from_slice(b" +0000");
    t
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

mod file;
mod writer;

/// A path in the temp directory no other test uses, for a test's log file.
#[cfg(test)]
fn test_log_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "tollgate-access-{name}-{}-{}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}
pub use writer::{AccessLog, Destination, ShardLog, BATCH_BYTES, SHARD_CAP_BYTES};

#[cfg(test)]
mod tests;
