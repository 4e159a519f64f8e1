//! Checks that io_uring works here before any shard starts.
//!
//! glommio panics deep inside executor construction when io_uring is not
//! usable; an operator should instead see the cause and the fix. Causes:
//! the kernel switch `kernel.io_uring_disabled`, a seccomp profile that
//! blocks the io_uring syscalls (Docker's default does, with EPERM), a
//! kernel without io_uring (ENOSYS), and a locked-memory limit too low for
//! the fixed buffers each shard registers.

/// Why io_uring cannot be used; the message names the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error("io_uring is disabled by the kernel setting kernel.io_uring_disabled={0}; fix: `sysctl -w kernel.io_uring_disabled=0` (see tuning/sysctl.conf)")]
    Disabled(u32),
    #[error("io_uring is blocked for this process (EPERM from io_uring_setup), usually a container seccomp profile; fix: run the container with a seccomp profile that allows io_uring_setup/io_uring_enter/io_uring_register (e.g. docker run --security-opt seccomp=unconfined)")]
    Blocked,
    #[error("this kernel has no io_uring support (ENOSYS); tollgate needs Linux 5.8 or newer built with CONFIG_IO_URING")]
    Unsupported,
    #[error("io_uring_setup failed: {0}")]
    Setup(String),
    #[error("locked-memory limit is {have} KiB but {shards} shard(s) need at least {need} KiB; fix: `ulimit -l {need}` in this shell, or LimitMEMLOCK= in the systemd unit (see tuning/tollgate.service)")]
    Memlock { have: u64, need: u64, shards: usize },
}

/// Runs every check for `shards` executors registering `io_memory` bytes
/// of io_uring buffers each.
pub fn preflight(shards: usize, io_memory: usize) -> Result<(), PreflightError> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        // 1 means only root / io_uring_group may create rings; the probe
        // below tells whether we are allowed.
        if let Ok(2) = text.trim().parse::<u32>() {
            return Err(PreflightError::Disabled(2));
        }
    }
    probe_ring()?;
    check_memlock(shards, io_memory, memlock_limit_kib())
}

/// Creates and closes a tiny ring.
pub fn probe_ring() -> Result<(), PreflightError> {
    // io_uring_params is 120 bytes of plain integers; zeroed is a valid
    // request for default flags.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads/writes at most sizeof(io_uring_params)
    // = 120 bytes at the pointer we pass, which points at a 120-byte buffer.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: closing the fd io_uring_setup just returned to us.
        unsafe {
            libc::close(fd as i32);
        }
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .unwrap_or(0);
            if disabled > 0 {
                Err(PreflightError::Disabled(disabled))
            } else {
                Err(PreflightError::Blocked)
            }
        }
        Some(libc::ENOSYS) => Err(PreflightError::Unsupported),
        _ => Err(PreflightError::Setup(err.to_string())),
    }
}

/// Soft RLIMIT_MEMLOCK in KiB (u64::MAX when unlimited).
pub fn memlock_limit_kib() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct at the pointer given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    lim.rlim_cur / 1024
}

/// Each executor registers `io_memory` on two of its rings.
pub(crate) fn check_memlock(
    shards: usize,
    io_memory: usize,
    have_kib: u64,
) -> Result<(), PreflightError> {
    let need = (shards as u64) * 2 * (io_memory as u64) / 1024;
    if have_kib < need {
        return Err(PreflightError::Memlock {
            have: have_kib,
            need,
            shards,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_rule_names_the_fix() {
        assert!(check_memlock(2, 64 * 1024, 8192).is_ok());
        let e = check_memlock(128, 64 * 1024, 64).expect_err("too low");
        let msg = e.to_string();
        assert!(msg.contains("ulimit -l"), "{msg}");
        assert!(msg.contains("128 shard"), "{msg}");
    }
}
