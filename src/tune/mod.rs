//! `tollgate tune`: inspect the host and recommend a tuning profile.
//!
//! [`inspect`] reads what the kernel reports (CPUs and SMT siblings, NUMA
//! nodes, memory, the locked-memory and open-files limits, io_uring
//! availability, listen-queue and port-range sysctls); [`recommend`] is a
//! pure function from that report to a profile (a TOML fragment for
//! `tollgate run config.toml --profile FILE`) and a list of warnings about
//! settings that will hurt. The shipped profiles in `tuning/` are what
//! `recommend` gives for the hosts they are named after (a test checks it).

use std::fmt::Write as _;

use crate::config::{parse_cpu_list, Host};
use crate::runtime::{memlock_limit_kib, probe_ring};

/// What the host looks like to tollgate.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub host: Host,
    /// NUMA node id → its CPUs (empty when the kernel does not say).
    pub numa_nodes: Vec<(usize, Vec<usize>)>,
    pub mem_total_kib: Option<u64>,
    pub memlock_kib: u64,
    /// `Err(reason)` when io_uring cannot be used.
    pub io_uring: Result<(), String>,
    pub somaxconn: Option<u64>,
    pub port_range: Option<(u64, u64)>,
    pub tcp_tw_reuse: Option<u64>,
    /// Soft and hard RLIMIT_NOFILE.
    pub nofile: (u64, u64),
    pub kernel: String,
}

/// A recommended profile and the warnings that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// Profile name: `laptop`, `edge-16c` or `edge-64c-numa`.
    pub name: &'static str,
    pub shards: &'static str,
    pub ring_depth: usize,
    pub io_memory: usize,
    pub spin_before_park_us: u64,
    pub backlog: u64,
    pub max_idle_per_backend: usize,
    pub warnings: Vec<String>,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads the host's facts.
pub fn inspect() -> HostReport {
    let mut numa_nodes = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/devices/system/node") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let cpus = read_trim(&format!("/sys/devices/system/node/{name}/cpulist"))
                    .and_then(|t| parse_cpu_list(&t))
                    .unwrap_or_default();
                numa_nodes.push((id, cpus));
            }
        }
    }
    numa_nodes.sort();
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    });
    let num = |p: &str| read_trim(p).and_then(|t| t.parse::<u64>().ok());
    let port_range = read_trim("/proc/sys/net/ipv4/ip_local_port_range").and_then(|t| {
        let mut it = t.split_whitespace().filter_map(|x| x.parse::<u64>().ok());
        Some((it.next()?, it.next()?))
    });
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct at the pointer given.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        (lim.rlim_cur, lim.rlim_max)
    } else {
        (0, 0)
    };
    HostReport {
        host: Host::detect(),
        numa_nodes,
        mem_total_kib,
        memlock_kib: memlock_limit_kib(),
        io_uring: probe_ring().map_err(|e| e.to_string()),
        somaxconn: num("/proc/sys/net/core/somaxconn"),
        port_range,
        tcp_tw_reuse: num("/proc/sys/net/ipv4/tcp_tw_reuse"),
        nofile,
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
    }
}

/// Chooses a profile for the host and lists what will hurt.
pub fn recommend(r: &HostReport) -> Recommendation {
    let cpus = r.host.cpus.len();
    let physical = r.host.physical_cpus().len();
    let numa = r
        .numa_nodes
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .count()
        .max(1);
    // No spinning before parking: it showed no CPU-per-request gain in
    // bench/compare.sh, and glommio's spin loop allocates on every turn.
    let spin = 0;
    let (name, ring_depth, backlog, max_idle) = if cpus <= 4 {
        ("laptop", 128, 1024, 64)
    } else if cpus <= 32 && numa == 1 {
        ("edge-16c", 256, 4096, 256)
    } else {
        ("edge-64c-numa", 512, 8192, 256)
    };
    // On big SMT hosts one shard per physical core: two busy shards on one
    // core's hyperthreads share its execution units.
    let shards = if physical < cpus && cpus > 4 {
        "physical"
    } else {
        "auto"
    };
    let io_memory = 64 * 1024;
    let shard_count = if shards == "physical" { physical } else { cpus };
    let mut warnings = Vec::new();
    if let Err(e) = &r.io_uring {
        warnings.push(format!(
            "io_uring is not usable, tollgate will not start: {e}"
        ));
    }
    let need_kib = (shard_count * 2 * io_memory / 1024) as u64;
    if r.memlock_kib < need_kib {
        warnings.push(format!(
            "locked-memory limit {} KiB is below the {need_kib} KiB {shard_count} shards need: raise `ulimit -l` or LimitMEMLOCK= (tuning/tollgate.service)",
            r.memlock_kib
        ));
    }
    if let Some(s) = r.somaxconn {
        if s < backlog {
            warnings.push(format!(
                "net.core.somaxconn = {s} caps the listen backlog below the profile's {backlog}: set it to 65535 (tuning/sysctl.conf)"
            ));
        }
    }
    let want_fds = 65_536;
    if r.nofile.1 < want_fds {
        warnings.push(format!(
            "open-files hard limit {} allows few connections: raise LimitNOFILE= (tuning/tollgate.service) or `ulimit -Hn`",
            r.nofile.1
        ));
    }
    if let Some((lo, hi)) = r.port_range {
        if hi.saturating_sub(lo) < 20_000 {
            warnings.push(format!(
                "net.ipv4.ip_local_port_range {lo}-{hi} leaves few ports for backend connections: widen it to 1024 65535"
            ));
        }
    }
    if r.tcp_tw_reuse == Some(0) {
        warnings.push(
            "net.ipv4.tcp_tw_reuse = 0: backend connection churn can exhaust ports in TIME_WAIT; set it to 1".into(),
        );
    }
    if numa > 1 {
        warnings.push(format!(
            "{numa} NUMA nodes: shards run on all of them; keep the NIC's interrupts on the node whose cores serve it, or list those cores in server.shards"
        ));
    }
    Recommendation {
        name,
        shards,
        ring_depth,
        io_memory,
        spin_before_park_us: spin,
        backlog,
        max_idle_per_backend: max_idle,
        warnings,
    }
}

impl Recommendation {
    /// The profile as a TOML fragment.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[server]");
        let _ = writeln!(s, "shards = \"{}\"", self.shards);
        let _ = writeln!(s, "backlog = {}", self.backlog);
        let _ = writeln!(s);
        let _ = writeln!(s, "[server.runtime]");
        let _ = writeln!(s, "ring_depth = {}", self.ring_depth);
        let _ = writeln!(s, "io_memory = {}", self.io_memory);
        let _ = writeln!(s, "spin_before_park = \"{}us\"", self.spin_before_park_us);
        let _ = writeln!(s);
        let _ = writeln!(s, "[server.upstream]");
        let _ = writeln!(s, "max_idle_per_backend = {}", self.max_idle_per_backend);
        s
    }
}

/// The whole `tollgate tune` output: a commented profile.
pub fn render(r: &HostReport, rec: &Recommendation) -> String {
    let mut s = String::new();
    let mem = r
        .mem_total_kib
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown memory".into());
    let _ = writeln!(s, "# tollgate tune: profile `{}` for this host", rec.name);
    let _ = writeln!(
        s,
        "# {} CPUs ({} physical cores), {} NUMA node(s), {mem}, kernel {}",
        r.host.cpus.len(),
        r.host.physical_cpus().len(),
        r.numa_nodes.len().max(1),
        r.kernel
    );
    let _ = writeln!(s, "# Use: tollgate run config.toml --profile THIS_FILE");
    if rec.warnings.is_empty() {
        let _ = writeln!(s, "# No warnings.");
    } else {
        let _ = writeln!(s, "# Warnings:");
        for w in &rec.warnings {
            let _ = writeln!(s, "#  - {w}");
        }
    }
    let _ = writeln!(s);
    s.push_str(&rec.to_toml());
    s
}

/// Descriptors `snap` can hold before a single request is in flight:
/// per shard, every listener's accept queue and every backend pool at
/// `max_idle_per_backend`, plus 256 for the process's own (io_uring
/// rings, log files, the quota store, the admin listener's connections).
pub fn descriptors_wanted(snap: &crate::config::Snapshot) -> u64 {
    let mut backends = std::collections::HashSet::new();
    for api in &snap.apis {
        for stage in &api.stages {
            let canary = stage.canary.iter().flat_map(|c| c.integrations.iter());
            for i in stage.integrations.iter().chain(canary) {
                if let crate::integration::Integration::Http(h) = i {
                    backends.insert((h.addr, h.pool_key));
                }
            }
        }
    }
    let s = &snap.server;
    let backlog: u64 = s.listeners.iter().map(|l| u64::from(l.backlog)).sum();
    let pools = backends.len() as u64 * s.max_idle_per_backend as u64;
    s.cores.len() as u64 * (backlog + pools) + 256
}

/// A warning when the open-files hard limit `hard` (what `tollgate run`
/// raises its soft limit to) is below [`descriptors_wanted`].
pub fn nofile_warning(snap: &crate::config::Snapshot, hard: u64) -> Option<String> {
    let want = descriptors_wanted(snap);
    (hard < want).then(|| {
        format!(
            "open-files limit {hard} is below the {want} descriptors this configuration can hold (listen backlogs and backend pools on {} shard(s)): past it new clients wait while idle keep-alive connections are closed to make room; raise LimitNOFILE= (tuning/tollgate.service) or `ulimit -n`",
            snap.server.cores.len()
        )
    })
}

/// The process's open-files hard limit.
pub fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct at the pointer given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cpus: usize, smt: bool, numa: usize) -> HostReport {
        let mut host = Host::with_cpus((0..cpus).collect());
        if smt {
            for c in cpus / 2..cpus {
                host.core_of.insert(c, c - cpus / 2);
            }
        }
        let per = cpus / numa;
        HostReport {
            host,
            numa_nodes: (0..numa)
                .map(|n| (n, (n * per..(n + 1) * per).collect()))
                .collect(),
            mem_total_kib: Some(64 << 20),
            memlock_kib: 65_536,
            io_uring: Ok(()),
            somaxconn: Some(65_535),
            port_range: Some((1024, 65_535)),
            tcp_tw_reuse: Some(1),
            nofile: (1_048_576, 1_048_576),
            kernel: "6.18".into(),
        }
    }

    /// The shipped profile files are what `recommend` says for their hosts.
    #[test]
    fn shipped_profiles_match_recommendations() {
        for (file, text, r) in [
            (
                "laptop",
                include_str!("../../tuning/laptop.toml"),
                report(4, false, 1),
            ),
            (
                "edge-16c",
                include_str!("../../tuning/edge-16c.toml"),
                report(32, true, 1),
            ),
            (
                "edge-64c-numa",
                include_str!("../../tuning/edge-64c-numa.toml"),
                report(128, true, 2),
            ),
        ] {
            let rec = recommend(&r);
            assert_eq!(rec.name, file);
            let shipped: toml::Value = toml::from_str(text).expect("profile parses");
            let generated: toml::Value = toml::from_str(&rec.to_toml()).expect("generated parses");
            assert_eq!(
                shipped, generated,
                "tuning/{file}.toml differs from `recommend`"
            );
        }
    }

    #[test]
    fn profiles_validate_over_the_bundled_config() {
        let base: toml::Value = toml::from_str(include_str!("../../config.toml")).expect("config");
        for text in [
            include_str!("../../tuning/laptop.toml"),
            include_str!("../../tuning/edge-16c.toml"),
            include_str!("../../tuning/edge-64c-numa.toml"),
        ] {
            let mut merged = base.clone();
            crate::config::merge(&mut merged, toml::from_str(text).expect("profile"));
            let cfg: crate::config::schema::Config =
                merged.try_into().expect("merged config deserializes");
            crate::config::Snapshot::build(&cfg, &Host::with_cpus(vec![0, 1])).expect("valid");
        }
    }

    #[test]
    fn warns_about_what_hurts() {
        let mut r = report(2, false, 1);
        r.memlock_kib = 64;
        r.somaxconn = Some(128);
        r.nofile = (1024, 4096);
        r.port_range = Some((32768, 40000));
        r.tcp_tw_reuse = Some(0);
        r.io_uring = Err("blocked".into());
        let rec = recommend(&r);
        assert_eq!(rec.warnings.len(), 6, "{:#?}", rec.warnings);
        assert!(rec.warnings.iter().any(|w| w.contains("ulimit -l")));
        assert!(rec.warnings.iter().any(|w| w.contains("somaxconn")));
    }

    #[test]
    fn smt_hosts_get_one_shard_per_physical_core() {
        assert_eq!(recommend(&report(32, true, 1)).shards, "physical");
        assert_eq!(recommend(&report(4, true, 1)).shards, "auto");
        assert_eq!(recommend(&report(16, false, 1)).shards, "auto");
    }
}
