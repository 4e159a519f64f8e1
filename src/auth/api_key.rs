//! API keys: the `x-api-key` header checked against the configured keys.
//!
//! Every key is held only as the SHA-256 digest of its value (a key given
//! in plain text is hashed at load), and a presented key is hashed and
//! looked up by digest. So the table never compares secrets byte by byte
//! (no timing signal about how much of a key matched), and configuration
//! may hold digests instead of secrets (`value_sha256`). Hashing is the
//! `sha2` crate's: not our core.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Amazon API Gateway's bounds on an API key value.
pub const MIN_KEY_LEN: usize = 20;
pub const MAX_KEY_LEN: usize = 128;

/// A SHA-256 digest.
pub type KeyDigest = [u8; 32];

/// Index of a key in the [`KeyTable`].
pub type KeyId = u32;

/// Why a key value or digest was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must be {MIN_KEY_LEN} to {MAX_KEY_LEN} characters, got {0}")]
    Length(usize),
    #[error("must be printable ASCII without spaces")]
    Characters,
    #[error("must be 64 hexadecimal digits (a SHA-256 digest)")]
    Digest,
    #[error("key name `{0}` is used twice")]
    DuplicateName(String),
    #[error("the key has the same value as key `{0}`")]
    DuplicateValue(String),
    #[error("line {line}: {reason}")]
    File { line: usize, reason: String },
}

/// Checks a plain key value and returns its digest.
pub fn digest_of_value(value: &str) -> Result<KeyDigest, KeyError> {
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&value.len()) {
        return Err(KeyError::Length(value.len()));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Characters);
    }
    Ok(digest(value.as_bytes()))
}

/// Parses a hex SHA-256 digest.
pub fn parse_digest(hex_text: &str) -> Result<KeyDigest, KeyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut out).map_err(|_| KeyError::Digest)?;
    Ok(out)
}

fn digest(bytes: &[u8]) -> KeyDigest {
    Sha256::digest(bytes).into()
}

/// One key read from a key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    pub name: String,
    pub digest: KeyDigest,
    /// Line number in the file.
    pub line: usize,
}

/// Parses a key file: one key per line, `NAME VALUE` or
/// `NAME sha256:HEX`; blank lines and lines starting with `#` are skipped.
///
/// Every bad line is reported, not only the first.
pub fn parse_key_file(text: &str) -> Result<Vec<FileKey>, Vec<KeyError>> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| KeyError::File {
            line: i + 1,
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            errors.push(err("expected `NAME VALUE` or `NAME sha256:HEX`".to_string()));
            continue;
        };
        let digest = match value.strip_prefix("sha256:") {
            Some(hex_text) => parse_digest(hex_text),
            None => digest_of_value(value),
        };
        let digest = match digest {
            Ok(d) => d,
            Err(e) => {
                errors.push(err(format!("key `{name}`: {e}")));
                continue;
            }
        };
        keys.push(FileKey {
            name: name.to_string(),
            digest,
            line: i + 1,
        });
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

/// The configured keys, by digest.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    by_digest: HashMap<KeyDigest, KeyId>,
    names: Vec<String>,
    by_name: HashMap<String, KeyId>,
}

impl KeyTable {
    /// Adds a key; names and values must be unique.
    pub fn insert(&mut self, name: &str, digest: KeyDigest) -> Result<KeyId, KeyError> {
        if self.by_name.contains_key(name) {
            return Err(KeyError::DuplicateName(name.to_string()));
        }
        if let Some(&other) = self.by_digest.get(&digest) {
            return Err(KeyError::DuplicateValue(self.names[other as usize].clone()));
        }
        let id = self.names.len() as KeyId;
        self.by_digest.insert(digest, id);
        self.names.push(name.to_string());
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// The key a client presented, if it is configured. Values outside the
    /// allowed length are refused before hashing.
    pub fn lookup(&self, presented: &[u8]) -> Option<KeyId> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&presented.len()) {
            return None;
        }
        self.by_digest.get(&digest(presented)).copied()
    }

    /// The key named `name`.
    pub fn id_of(&self, name: &str) -> Option<KeyId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i as KeyId)
    }

    pub fn name(&self, id: KeyId) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice-key-0123456789abcdef";

    #[test]
    fn plain_and_hashed_keys_are_found_by_value() {
        let mut t = KeyTable::default();
        let a = t
            .insert("alice", digest_of_value(ALICE).expect("valid"))
            .expect("insert");
        // sha256("bob-key-0123456789abcdefgh")
        let bob_hex = hex::encode(Sha256::digest(b"bob-key-0123456789abcdefgh"));
        let b = t
            .insert("bob", parse_digest(&bob_hex).expect("hex"))
            .expect("insert");
        assert_eq!(t.lookup(ALICE.as_bytes()), Some(a));
        assert_eq!(t.lookup(b"bob-key-0123456789abcdefgh"), Some(b));
        assert_eq!(t.lookup(b"alice-key-0123456789abcdeX"), None);
        assert_eq!(t.lookup(b"short"), None);
        assert_eq!(t.lookup(b""), None);
        assert_eq!(t.name(b), "bob");
        assert_eq!(t.id_of("alice"), Some(a));
    }

    #[test]
    fn bad_values_and_duplicates_are_refused() {
        assert_eq!(digest_of_value("short"), Err(KeyError::Length(5)));
        assert_eq!(
            digest_of_value("has a space in it, twenty+"),
            Err(KeyError::Characters)
        );
        assert_eq!(parse_digest("abc"), Err(KeyError::Digest));
        let mut t = KeyTable::default();
        let d = digest_of_value(ALICE).expect("valid");
        t.insert("alice", d).expect("insert");
        assert_eq!(
            t.insert("alice", [0; 32]),
            Err(KeyError::DuplicateName("alice".into()))
        );
        assert_eq!(
            t.insert("again", d),
            Err(KeyError::DuplicateValue("alice".into()))
        );
    }

    #[test]
    fn key_files_parse_with_line_numbers() {
        let text = format!(
            "# keys\n\nalice {ALICE}\nbob sha256:{}\n",
            hex::encode([7u8; 32])
        );
        let keys = parse_key_file(&text).expect("parses");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].digest, [7u8; 32]);
        assert_eq!(
            parse_key_file("alice\n"),
            Err(vec![KeyError::File {
                line: 1,
                reason: "expected `NAME VALUE` or `NAME sha256:HEX`".into()
            }])
        );
        let e = parse_key_file("# c\nbob tooshort\nok-key value-0123456789abcdefgh\ncarol x y\n")
            .expect_err("bad lines");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(matches!(e[0], KeyError::File { line: 2, .. }), "{e:?}");
        assert!(matches!(e[1], KeyError::File { line: 4, .. }), "{e:?}");
    }
}
