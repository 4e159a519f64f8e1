//! Tuning profiles: TOML fragments merged over a configuration.
//!
//! `tollgate run config.toml --profile tuning/edge-16c.toml` reads both
//! files and merges the profile over the configuration before validation:
//! tables merge key by key, and any other value in the profile (numbers,
//! strings, arrays) replaces the configuration's.

use toml::Value;

/// Merges `overlay` into `base` in place.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_merge_and_values_replace() {
        let mut base: Value = toml::from_str(
            "[server]\nshards = \"auto\"\nbacklog = 10\n[server.limits]\nmax_headers = 5\n[[server.listen]]\naddr = \"a\"\n",
        )
        .expect("base");
        let overlay: Value =
            toml::from_str("[server]\nbacklog = 4096\n[server.runtime]\nring_depth = 256\n")
                .expect("overlay");
        merge(&mut base, overlay);
        let s = &base["server"];
        assert_eq!(s["shards"].as_str(), Some("auto"));
        assert_eq!(s["backlog"].as_integer(), Some(4096));
        assert_eq!(s["limits"]["max_headers"].as_integer(), Some(5));
        assert_eq!(s["runtime"]["ring_depth"].as_integer(), Some(256));
        assert_eq!(s["listen"][0]["addr"].as_str(), Some("a"));
    }
}
