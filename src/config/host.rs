//! Facts about the machine a snapshot is built for: which CPUs this
//! process may use and which of them are SMT siblings of one core.

use std::collections::BTreeMap;

/// The CPUs available to this process and their physical cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// CPUs this process may run on (its affinity mask), ascending.
    pub cpus: Vec<usize>,
    /// For each CPU, the lowest-numbered CPU of the same physical core
    /// (itself when it has no SMT sibling). Missing entries mean unknown.
    pub core_of: BTreeMap<usize, usize>,
}

impl Host {
    /// A host with these CPUs, each its own physical core.
    pub fn with_cpus(cpus: Vec<usize>) -> Host {
        let core_of = cpus.iter().map(|&c| (c, c)).collect();
        Host { cpus, core_of }
    }

    /// Reads the affinity mask of this process and the SMT topology from
    /// `/sys/devices/system/cpu`.
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
        let mut core_of = BTreeMap::new();
        for &c in &cpus {
            let path = format!("/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list");
            let first = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| parse_cpu_list(t.trim()))
                .and_then(|l| l.into_iter().min())
                .unwrap_or(c);
            core_of.insert(c, first);
        }
        Host { cpus, core_of }
    }

    /// One CPU per physical core: SMT siblings after the first are left
    /// out, so two shards never share a core's execution units.
    pub fn physical_cpus(&self) -> Vec<usize> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for &c in &self.cpus {
            let core = self.core_of.get(&c).copied().unwrap_or(c);
            if !seen.contains(&core) {
                seen.push(core);
                out.push(c);
            }
        }
        out
    }
}

/// Parses the kernel's CPU list format: `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().ok()?,
                    b.trim().parse::<usize>().ok()?,
                );
                if b < a || b - a > 65536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn physical_skips_smt_siblings() {
        let mut h = Host::with_cpus(vec![0, 1, 2, 3]);
        h.core_of.insert(2, 0);
        h.core_of.insert(3, 1);
        assert_eq!(h.physical_cpus(), vec![0, 1]);
    }
}
