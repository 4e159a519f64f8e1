//! Configuration: `config.toml` schema, validation with precise messages,
//! and compilation into an immutable [`Snapshot`] the shards share.
//!
//! Loading never stops at the first semantic problem: every error found is
//! reported with its key path (`api[0].route[2].key`) and the reason, so a
//! user fixes a file in one pass. Syntax and type errors come from the TOML
//! parser and carry the key path and the line.

pub mod schema;
mod snapshot;

pub use snapshot::{Api, Listener, Mount, Resolved, ServerSettings, Snapshot, Stage, Timeouts};

use std::fmt;
use std::path::Path;

/// One problem in a configuration: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path, e.g. `api[0].route[1].integration.uri`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {}", issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        file: String,
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// Every issue, for printing one per line.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ConfigError::Read { file, source } => vec![ConfigIssue {
                path: file.clone(),
                reason: source.to_string(),
            }],
            ConfigError::Invalid { issues, .. } => issues.clone(),
        }
    }
}

/// Facts about the host the snapshot is built for.
#[derive(Debug, Clone)]
pub struct Host {
    /// CPUs this process may run on (its affinity mask).
    pub cpus: Vec<usize>,
}

impl Host {
    /// Reads the affinity mask of this process.
    pub fn detect() -> Host {
        let mut cpus = Vec::new();
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
        // size_of::<cpu_set_t>() bytes into it and we pass that size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                for cpu in 0..libc::CPU_SETSIZE as usize {
                    if libc::CPU_ISSET(cpu, &set) {
                        cpus.push(cpu);
                    }
                }
            }
        }
        if cpus.is_empty() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus = (0..n).collect();
        }
        Host { cpus }
    }
}

/// Parses TOML text into the schema, with the key path on error.
pub fn parse(text: &str) -> Result<schema::Config, ConfigIssue> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigIssue {
            path: if path == "." { "config".into() } else { path },
            reason: format!("{}{location}", inner.message().trim()),
        }
    })
}

/// Parses and validates TOML text into a snapshot.
pub fn from_str(text: &str, file: &str, host: &Host) -> Result<Snapshot, ConfigError> {
    let invalid = |issues| ConfigError::Invalid {
        file: file.to_string(),
        issues,
    };
    let config = parse(text).map_err(|i| invalid(vec![i]))?;
    Snapshot::build(&config, host).map_err(invalid)
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path, host: &Host) -> Result<Snapshot, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    from_str(&text, &file, host)
}

#[cfg(test)]
mod tests;
