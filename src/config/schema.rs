//! The `config.toml` schema: what a user may write, with named defaults.
//!
//! Unknown keys are rejected everywhere (`deny_unknown_fields`), so a typo
//! is an error with its key path rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
#[derive(Debug, Clone, Deserialize, Default)]
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
}

/// An API key: its value in plain text or as a SHA-256 digest (hex).
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Copy, Deserialize)]
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
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Deserialize)]
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
}

/// Default state directory, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = "tollgate-state";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// Per-shard executor settings (hardware tuning; see `tuning/`).
#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

fn default_request_id_header() -> String {
    "x-request-id".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub addr: String,
    /// Listeners are TLS unless they say `tls = false`.
    #[serde(default = "yes")]
    pub tls: bool,
    /// Defaults to `server.backlog`.
    #[serde(default)]
    pub backlog: Option<u32>,
}

fn yes() -> bool {
    true
}

fn default_backlog() -> u32 {
    DEFAULT_BACKLOG
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
}

/// A token-bucket throttle: `rate` requests per second, `burst` bucket size.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    pub rate: u64,
    pub burst: u64,
}

/// Account-level throttle (Amazon API Gateway's per-account limit) and how
/// shards share limits.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
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

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
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

fn ok_status() -> u16 {
    200
}
