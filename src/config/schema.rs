//! The `config.toml` schema: what a user may write, with named defaults.
//!
//! Unknown keys are rejected everywhere (`deny_unknown_fields`), so a typo
//! is an error with its key path rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default request line + header block limit: Amazon API Gateway's 10,240 bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 10_240;
/// Default request-target limit, bytes.
pub const DEFAULT_MAX_URI_BYTES: usize = 8_192;
/// Default maximum number of request header fields.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default request body limit: Amazon API Gateway's 10 MB payload.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default limit for a backend's response head.
pub const DEFAULT_MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;
/// Time a client has to send a complete request head (slowloris guard).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause allowed between two reads of a request body.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive client connections are closed after this.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a client to accept more response bytes.
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to establish a backend connection.
pub const DEFAULT_BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Integration timeout: Amazon API Gateway's 29 s.
pub const DEFAULT_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// An upgraded (WebSocket) tunnel with no traffic either way is closed
/// after this: Amazon API Gateway's WebSocket idle timeout, 10 minutes.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long shutdown waits for in-flight requests.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle backend connections kept per shard and backend.
pub const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 256;
/// Idle backend connections are closed after this.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Listen backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// io_uring fixed-buffer memory per shard: tollgate does no DMA file I/O,
/// so small (glommio's default is 10 MiB of locked memory).
pub const DEFAULT_IO_MEMORY: usize = 64 * 1024;
/// io_uring submission queue entries per ring.
pub const DEFAULT_RING_DEPTH: usize = 128;
/// How long an idle shard spins before sleeping in the kernel (0 = never).
pub const DEFAULT_SPIN_BEFORE_PARK: Duration = Duration::ZERO;
/// glommio's task-queue preemption timer.
pub const DEFAULT_PREEMPT_TIMER: Duration = Duration::from_millis(100);

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default, rename = "api")]
    pub apis: Vec<ApiConfig>,
    /// API keys (`x-api-key`), by name.
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Usage plans: keys bound to stages with a throttle and a quota.
    #[serde(default, rename = "usage_plan")]
    pub usage_plans: Vec<UsagePlanConfig>,
    /// Custom domain names with base path mappings.
    #[serde(default, rename = "domain")]
    pub domains: Vec<DomainConfig>,
}

/// An API key: its value in plain text or as a SHA-256 digest (hex).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_sha256: Option<String>,
}

/// A usage plan (Amazon API Gateway's): every key listed gets its own
/// throttle and quota, counted over all the plan's stages together.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanConfig {
    pub name: String,
    /// `API/STAGE` names (`$default` for an API's default stage).
    pub stages: Vec<String>,
    /// Names of `[[api_key]]` entries or keys from `server.api_keys_file`.
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub throttle: Option<ThrottleConfig>,
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
}

/// `limit` requests per `period` (DAY, WEEK or MONTH, UTC).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub limit: u64,
    pub period: crate::throttle::quota::Period,
    /// Requests subtracted from the limit in the first period a key is
    /// seen (Amazon API Gateway's `offset`).
    #[serde(default)]
    pub offset: u64,
}

/// `shards = "auto" | N | [cores]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Shards {
    Named(String),
    Count(usize),
    Cores(Vec<usize>),
}

impl Default for Shards {
    fn default() -> Self {
        Shards::Named("auto".into())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default)]
    pub shards: Shards,
    #[serde(default)]
    pub listen: Vec<ListenConfig>,
    /// Response (and forwarded request) header carrying the request id.
    #[serde(default = "default_request_id_header")]
    pub request_id_header: String,
    /// Keep a request id sent by the client instead of generating one.
    #[serde(default)]
    pub trust_request_id: bool,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Backlog of listeners that do not set their own.
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub throttle: ServerThrottleConfig,
    /// A file of API keys, one `NAME VALUE` or `NAME sha256:HEX` per line.
    #[serde(default)]
    pub api_keys_file: Option<PathBuf>,
    /// Where state that outlives the process (quota counters) is kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The response cache shared by all shards and stages.
    #[serde(default)]
    pub cache: ServerCacheConfig,
    /// The admin listener (metrics, status, reload, cache flushes).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Path spellings a lenient backend could read as a guarded route.
    #[serde(default)]
    pub ambiguous_paths: AmbiguousPathsConfig,
}

/// What a path spelling means when a backend might read it more leniently
/// than the router (see `router::lenient`): `refuse` answers 400 when
/// that reading would reach a route with its own API key requirement or
/// throttle that the exact match did not pick; `literal` compares the
/// path bytes as they are (Amazon API Gateway's behaviour), for APIs
/// whose backends do the same.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AmbiguousPathsConfig {
    /// `;params` in a segment (Java servlet containers drop them).
    pub params: PathReading,
    /// Dots ending a segment (IIS and some frameworks drop them).
    pub trailing_dots: PathReading,
    /// Letter case (case-insensitive routers fold it).
    pub case: PathReading,
}

impl Default for AmbiguousPathsConfig {
    fn default() -> Self {
        AmbiguousPathsConfig {
            params: PathReading::Refuse,
            trailing_dots: PathReading::Refuse,
            case: PathReading::Refuse,
        }
    }
}

impl AmbiguousPathsConfig {
    /// The readings checked against guarded routes.
    pub fn leniency(&self) -> crate::router::lenient::Leniency {
        crate::router::lenient::Leniency {
            params: self.params == PathReading::Refuse,
            trailing_dots: self.trailing_dots == PathReading::Refuse,
            case: self.case == PathReading::Refuse,
        }
    }
}

/// See [`AmbiguousPathsConfig`].
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PathReading {
    Refuse,
    Literal,
}

/// Default admin listener: loopback only.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";

/// The admin listener: `GET /metrics`, `GET /status`, `GET /config`,
/// `POST /reload`, `POST /cache/flush`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// Loopback by default; any other address is the operator's choice.
    pub addr: String,
    /// Bearer token every admin request must carry (plain or as a
    /// SHA-256 hex digest).
    pub token: Option<String>,
    pub token_sha256: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            addr: DEFAULT_ADMIN_ADDR.into(),
            token: None,
            token_sha256: None,
        }
    }
}

/// The response cache's size and invalidation credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerCacheConfig {
    /// Amazon API Gateway's tiers, by name as its `cacheClusterSize`
    /// ("0.5", "1.6", "6.1", "13.5", "28.4", "58.2", "118", "237": GB) or
    /// with the unit ("0.5GB"), or any size ("64MiB", a number of bytes).
    #[serde(deserialize_with = "capacity")]
    pub capacity: ByteSize,
    /// Larger responses are passed through, never stored.
    pub max_entry_bytes: ByteSize,
    /// Independently locked segments (a power of two).
    pub segments: usize,
    /// Concurrent misses for one key wait this long for the request
    /// fetching it (request coalescing), then fetch on their own.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// A client sending `Cache-Control: max-age=0` with this token in
    /// `x-cache-invalidate-token` may refresh an entry (plain or as a
    /// SHA-256 hex digest).
    pub invalidation_token: Option<String>,
    pub invalidation_token_sha256: Option<String>,
}

/// Default cache capacity: Amazon API Gateway's smallest tier.
pub const DEFAULT_CACHE_CAPACITY: u64 = 500_000_000;
/// Default largest cached response: Amazon API Gateway's 1,048,576 bytes.
pub const DEFAULT_CACHE_MAX_ENTRY: u64 = 1_048_576;
/// Default segment count.
pub const DEFAULT_CACHE_SEGMENTS: usize = 64;
/// Default wait for a coalesced miss (NGINX's `proxy_cache_lock_timeout`).
pub const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ServerCacheConfig {
    fn default() -> Self {
        ServerCacheConfig {
            capacity: ByteSize(DEFAULT_CACHE_CAPACITY),
            max_entry_bytes: ByteSize(DEFAULT_CACHE_MAX_ENTRY),
            segments: DEFAULT_CACHE_SEGMENTS,
            lock_timeout: DEFAULT_CACHE_LOCK_TIMEOUT,
            invalidation_token: None,
            invalidation_token_sha256: None,
        }
    }
}

/// A size in bytes: a number, or a string with a unit (`B`, `KB`, `MB`,
/// `GB` decimal; `KiB`, `MiB`, `GiB` binary), e.g. `"0.5GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a size: a number with B, KB, MB, GB, KiB, MiB or GiB (e.g. \"0.5GB\")"
                ))
            }),
        }
    }
}

/// Amazon API Gateway's cache sizes (`cacheClusterSize`), in GB.
pub const CACHE_TIERS: [&str; 8] = ["0.5", "1.6", "6.1", "13.5", "28.4", "58.2", "118", "237"];

/// A tier's size in bytes, for a tier name (`"13.5"`).
pub fn cache_tier(name: &str) -> Option<u64> {
    let name = name.trim();
    if !CACHE_TIERS.contains(&name) {
        return None;
    }
    parse_size(&format!("{name}GB"))
}

/// The cache capacity: a tier name as a string or a TOML float (`"0.5"`,
/// `0.5`, `"118"`: GB, Amazon API Gateway's form), a size with a unit, or
/// an integer number of bytes.
fn capacity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        F(f64),
        S(String),
    }
    let tiers = CACHE_TIERS.join(", ");
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(ByteSize(n)),
        Raw::F(f) => CACHE_TIERS
            .iter()
            .find(|t| t.parse::<f64>().is_ok_and(|v| v == f))
            .and_then(|t| cache_tier(t))
            .map(ByteSize)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{f} is not a cache tier ({tiers}, in GB); write other sizes with a unit, e.g. \"2GB\""
                ))
            }),
        Raw::S(s) => cache_tier(&s)
            .or_else(|| parse_size(&s))
            .map(ByteSize)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{s}` is neither a cache tier ({tiers}, in GB) nor a size with B, KB, MB, GB, KiB, MiB or GiB (e.g. \"64MiB\")"
                ))
            }),
    }
}

/// Parses `"0.5GB"`, `"64MiB"`, `"1024"`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = n * mult;
    (0.0..1.8e19)
        .contains(&bytes)
        .then_some(bytes.round() as u64)
}

/// A stage's cache settings (Amazon API Gateway's stage cache).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageCacheConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time to live: 300 s by default, at most 3600 s, 0 disables.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Ignore the backend's Cache-Control (store whatever the TTL says),
    /// as Amazon API Gateway does.
    #[serde(default)]
    pub ignore_backend_cache_control: bool,
    /// Honour a client's `Cache-Control: max-age=0` only with the
    /// invalidation token.
    #[serde(default = "yes")]
    pub require_authorization: bool,
    /// What an unauthorized `max-age=0` gets.
    #[serde(default)]
    pub unauthorized: UnauthorizedInvalidation,
}

/// Default cache TTL: Amazon API Gateway's 300 s.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Longest cache TTL: Amazon API Gateway's 3600 s.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

fn default_cache_ttl() -> Duration {
    DEFAULT_CACHE_TTL
}

/// Amazon API Gateway's "handle unauthorized requests" choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnauthorizedInvalidation {
    /// 403 `{"message":"Forbidden"}`.
    Fail,
    /// Serve from the cache and say so in a `warning` header.
    #[default]
    IgnoreWithHeader,
    /// Serve from the cache silently.
    Ignore,
}

/// A route's cache overrides.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    pub enabled: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// `path.NAME`, `query.NAME`, `header.NAME`; empty: the whole URL.
    #[serde(default)]
    pub key: Vec<String>,
    /// Statuses stored (default 200).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// Methods cached (default GET; HEAD is answered from GET entries).
    /// Other methods are an explicit opt-in: their key is the same
    /// parameters plus the method, never the request body.
    #[serde(default)]
    pub methods: Vec<String>,
    /// After its TTL, an entry may still be served this long while one
    /// request refreshes it (RFC 5861 `stale-while-revalidate`).
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Option<Duration>,
    /// After its TTL, an entry may still be served this long when the
    /// backend cannot be reached or times out (`stale-if-error`).
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Option<Duration>,
}

/// Default state directory, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = "tollgate-state";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// Per-shard executor settings (hardware tuning; see `tuning/`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Bytes of io_uring fixed buffers per shard (locked memory).
    pub io_memory: usize,
    /// Submission queue entries per io_uring ring.
    pub ring_depth: usize,
    /// Spin this long before sleeping when a shard runs out of work: lower
    /// wake-up latency for a core that does nothing else, at the cost of
    /// burning it while idle.
    #[serde(with = "humantime_serde")]
    pub spin_before_park: Duration,
    /// Longest a task queue runs before the executor checks for other work.
    #[serde(with = "humantime_serde")]
    pub preempt_timer: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            io_memory: DEFAULT_IO_MEMORY,
            ring_depth: DEFAULT_RING_DEPTH,
            spin_before_park: DEFAULT_SPIN_BEFORE_PARK,
            preempt_timer: DEFAULT_PREEMPT_TIMER,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shards: Shards::default(),
            listen: Vec::new(),
            request_id_header: default_request_id_header(),
            trust_request_id: false,
            limits: LimitsConfig::default(),
            timeouts: TimeoutsConfig::default(),
            upstream: UpstreamConfig::default(),
            backlog: DEFAULT_BACKLOG,
            runtime: RuntimeConfig::default(),
            throttle: ServerThrottleConfig::default(),
            api_keys_file: None,
            state_dir: default_state_dir(),
            cache: ServerCacheConfig::default(),
            admin: AdminConfig::default(),
            ambiguous_paths: AmbiguousPathsConfig::default(),
        }
    }
}

fn default_request_id_header() -> String {
    "x-request-id".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub addr: String,
    /// Listeners are TLS unless they say `tls = false`.
    #[serde(default = "yes")]
    pub tls: bool,
    /// Defaults to `server.backlog`.
    #[serde(default)]
    pub backlog: Option<u32>,
    /// PEM certificate chain (leaf first) for clients without SNI or with
    /// a name no `[[domain]]` serves. Without `certificate` and `key` a TLS
    /// listener presents a self-signed development certificate, generated
    /// once into `server.state_dir`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `"default"`: clients without SNI or with an unknown name get the
    /// listener's certificate; `"refuse"`: their handshake is refused.
    #[serde(default)]
    pub unknown_sni: UnknownSniConfig,
    /// Accept a connection only once its first bytes arrived
    /// (TCP_DEFER_ACCEPT; NGINX's `listen ... deferred`, Apache httpd's
    /// default `AcceptFilter http data` on Linux). On by default: HTTP and
    /// TLS clients speak first, so the first read of a new connection finds
    /// its request and never waits in the reactor (about a quarter less
    /// CPU per new connection, docs/performance.md). A client that connects
    /// and sends nothing is handed over after about a second, then has
    /// `client_header` to send its request. `false` accepts at once.
    #[serde(default = "yes")]
    pub defer_accept: bool,
}

/// See [`ListenConfig::unknown_sni`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSniConfig {
    #[default]
    Default,
    Refuse,
}

/// A custom domain name (Amazon API Gateway's): its certificate, mutual
/// TLS, and base path mappings to API stages. Requests for the name are
/// routed by the longest matching base path, which is stripped before
/// route matching; the stage name is not part of the path.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// `api.example.com` or `*.example.com`.
    pub name: String,
    /// PEM certificate chain and key for the name; without them the
    /// listener's certificate is presented.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Require (or accept) client certificates from this truststore.
    #[serde(default)]
    pub mtls: Option<MtlsConfig>,
    #[serde(default, rename = "mapping")]
    pub mappings: Vec<MappingConfig>,
}

/// Mutual TLS for a custom domain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// PEM file of the CA certificates client certificates must chain to.
    pub truststore: PathBuf,
    /// `"required"`: no handshake without a valid client certificate;
    /// `"optional"`: verified when the client sends one.
    #[serde(default)]
    pub mode: MtlsMode,
    /// Headers that carry the verified certificate's facts to backends.
    #[serde(default)]
    pub headers: ClientCertHeadersConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    #[default]
    Required,
    Optional,
}

/// Header names for a verified client certificate's subject DN, issuer
/// DN, serial number (hex) and validity bounds (RFC 3339); each optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientCertHeadersConfig {
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

/// One base path mapping of a custom domain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// `""` (the root) or a path such as `"v1"` / `"/orders/v2"`.
    #[serde(default)]
    pub base_path: String,
    pub api: String,
    pub stage: String,
}

fn yes() -> bool {
    true
}

fn default_backlog() -> u32 {
    DEFAULT_BACKLOG
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub max_response_header_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_response_header_bytes: DEFAULT_MAX_RESPONSE_HEADER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    #[serde(with = "humantime_serde")]
    pub client_header: Duration,
    #[serde(with = "humantime_serde")]
    pub client_body: Duration,
    #[serde(with = "humantime_serde")]
    pub client_send: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    #[serde(with = "humantime_serde")]
    pub backend_connect: Duration,
    #[serde(with = "humantime_serde")]
    pub integration: Duration,
    #[serde(with = "humantime_serde")]
    pub tunnel_idle: Duration,
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            client_header: DEFAULT_CLIENT_HEADER_TIMEOUT,
            client_body: DEFAULT_CLIENT_BODY_TIMEOUT,
            client_send: DEFAULT_CLIENT_SEND_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE_TIMEOUT,
            backend_connect: DEFAULT_BACKEND_CONNECT_TIMEOUT,
            integration: DEFAULT_INTEGRATION_TIMEOUT,
            tunnel_idle: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            drain: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub max_idle_per_backend: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_idle_per_backend: DEFAULT_MAX_IDLE_PER_BACKEND,
            idle_timeout: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
        }
    }
}

/// One API: selected by host and base path, with stages and routes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub name: String,
    /// Exact names, `*.suffix` wildcards, or `*` for any host.
    #[serde(default = "any_host")]
    pub hosts: Vec<String>,
    /// Path prefix in front of the stage prefix, e.g. `/v1`.
    #[serde(default)]
    pub base_path: String,
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

fn any_host() -> Vec<String> {
    vec!["*".into()]
}

/// A stage: `$default` serves at the API's root, any other name adds
/// `/{name}` to the path; its variables fill `${stageVariables.NAME}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Stage-level throttle (all routes of the stage together).
    #[serde(default)]
    pub throttle: Option<ThrottleConfig>,
    /// Every route of the stage requires an API key unless it says not.
    #[serde(default)]
    pub api_key_required: bool,
    /// Response cache for the stage's GET and HEAD routes.
    #[serde(default)]
    pub cache: Option<StageCacheConfig>,
    /// Access log of the stage's requests (off unless set).
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// A canary: a share of the stage's requests goes to the same routes
    /// with some stage variables overridden (Amazon API Gateway's stage
    /// canary settings), e.g.
    /// `canary = { percent = 10.0, variables = { backend = "v2:8080" } }`.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
}

/// A stage's canary (Amazon API Gateway's `canarySettings`). Canary
/// requests are the stage's requests in every other respect: the same
/// routes, API keys, usage plans, throttles and cache; they are counted in
/// metric series of their own (`canary="true"`) and logged to the stage's
/// access log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Share of the stage's requests sent to the canary, 0.0 to 100.0
    /// (`percentTraffic`).
    pub percent: f64,
    /// Stage variables for canary requests, merged over the stage's
    /// `variables` (the canary's value wins; `stageVariableOverrides`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Choose by a hash of the client's IP address, so one client always
    /// gets the same side (across requests, shards and restarts), instead
    /// of a random draw per request.
    #[serde(default)]
    pub sticky: bool,
}

/// A stage's access log (Amazon API Gateway's access log settings).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `"stdout"` or a file path (appended to; reopened on SIGUSR1).
    pub destination: String,
    /// `"clf"`, `"json"`, `"csv"` or a template of `$context.*` variables.
    #[serde(default = "default_log_format")]
    pub format: String,
}

fn default_log_format() -> String {
    "json".into()
}

/// A token-bucket throttle: `rate` requests per second, `burst` bucket size.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    pub rate: u64,
    pub burst: u64,
}

/// Account-level throttle (Amazon API Gateway's per-account limit) and how
/// shards share limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerThrottleConfig {
    pub enabled: bool,
    pub rate: u64,
    pub burst: u64,
    /// How often shards and the reconciler exchange lease tokens.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How often quota counters are written to the state directory.
    #[serde(with = "humantime_serde")]
    pub quota_flush_interval: Duration,
    /// Optional per-client-IP limit (like NGINX `limit_req`).
    pub client_ip: Option<ClientIpThrottleConfig>,
}

/// A token bucket per client IP address, in a table of bounded size.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientIpThrottleConfig {
    pub rate: u64,
    pub burst: u64,
    /// Most addresses tracked at once; idle ones are evicted first.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

/// Default size of the per-client-IP table.
pub const DEFAULT_MAX_CLIENTS: usize = 1_000_000;

fn default_max_clients() -> usize {
    DEFAULT_MAX_CLIENTS
}

/// Quota counters are persisted at least this often.
pub const DEFAULT_QUOTA_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Account throttle: Amazon API Gateway's 10,000 requests per second...
pub const DEFAULT_ACCOUNT_RATE: u64 = 10_000;
/// ...with a burst of 5,000.
pub const DEFAULT_ACCOUNT_BURST: u64 = 5_000;
/// Lease exchange interval.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(10);

impl Default for ServerThrottleConfig {
    fn default() -> Self {
        ServerThrottleConfig {
            enabled: true,
            rate: DEFAULT_ACCOUNT_RATE,
            burst: DEFAULT_ACCOUNT_BURST,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            quota_flush_interval: DEFAULT_QUOTA_FLUSH_INTERVAL,
            client_ip: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub key: String,
    pub integration: IntegrationConfig,
    /// Route-level throttle, per stage.
    #[serde(default)]
    pub throttle: Option<ThrottleConfig>,
    /// Requires an API key (overrides the stage's `api_key_required`).
    #[serde(default)]
    pub api_key_required: Option<bool>,
    /// Cache overrides (the stage's `cache` enables caching).
    #[serde(default)]
    pub cache: Option<RouteCacheConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum IntegrationConfig {
    /// Proxy to an HTTP backend.
    Http {
        uri: String,
        /// Overrides `server.timeouts.integration` for this route.
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        /// Send the client's Host header instead of the backend's.
        #[serde(default)]
        preserve_host: bool,
        /// Trust and identity for an `https://` backend.
        #[serde(default)]
        tls: Option<BackendTlsConfig>,
    },
    /// Answer from configuration, without a backend.
    Mock {
        #[serde(default = "ok_status")]
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
    },
}

/// How the gateway connects to an `https://` backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendTlsConfig {
    /// PEM CA certificates to trust instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    /// A client certificate (and its key) to present to the backend.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn ok_status() -> u16 {
    200
}
