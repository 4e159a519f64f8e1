//! Configuration: `config.toml` schema, validation with precise messages,
//! and compilation into an immutable [`Snapshot`] the shards share.
//!
//! Loading never stops at the first semantic problem: every error found is
//! reported with its key path (`api[0].route[2].key`) and the reason, so a
//! user fixes a file in one pass. Syntax and type errors come from the TOML
//! parser and carry the key path and the line.

mod apis;
mod caching;
mod host;
mod merge;
mod plans;
pub mod schema;
mod snapshot;
pub mod tls;

pub use apis::Mount;
pub use caching::{CacheSpec, RouteCache, StageCache};
pub use host::{parse_cpu_list, Host};
pub use merge::merge;
pub use plans::{KeyLimits, QuotaInfo};

pub use snapshot::{
    AdminSettings, Api, ClientIpLimit, Limit, Listener, Resolved, Runtime, ServerSettings,
    Snapshot, Stage, Timeouts,
};

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
    load_with_profile(path, None, host)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })
}

/// Reads a configuration file, merges a tuning profile over it (see
/// [`merge`]), and validates the result.
pub fn load_with_profile(
    path: &Path,
    profile: Option<&Path>,
    host: &Host,
) -> Result<Snapshot, ConfigError> {
    let text = read(path)?;
    let Some(profile) = profile else {
        return from_str(&text, &path.display().to_string(), host);
    };
    let file = format!("{} + profile {}", path.display(), profile.display());
    let invalid = |issues| ConfigError::Invalid {
        file: file.clone(),
        issues,
    };
    let as_value = |text: &str, name: &Path| {
        toml::from_str::<toml::Value>(text).map_err(|e| ConfigIssue {
            path: name.display().to_string(),
            reason: e.message().trim().to_string(),
        })
    };
    let mut base = as_value(&text, path).map_err(|i| invalid(vec![i]))?;
    let overlay = as_value(&read(profile)?, profile).map_err(|i| invalid(vec![i]))?;
    merge(&mut base, overlay);
    let config: schema::Config = serde_path_to_error::deserialize(base).map_err(|e| {
        let path = e.path().to_string();
        invalid(vec![ConfigIssue {
            path,
            reason: e.into_inner().message().trim().to_string(),
        }])
    })?;
    Snapshot::build(&config, host).map_err(invalid)
}

#[cfg(test)]
mod tests;
