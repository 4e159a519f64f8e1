//! The `tollgate` binary as a user runs it: `check`, `run`, signals,
//! graceful drain, bounded memory while streaming large bodies.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

fn write_config(text: &str) -> tempfile_path::TempConfig {
    tempfile_path::TempConfig::new(text)
}

mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static N: AtomicUsize = AtomicUsize::new(0);

    /// A config file in the target temp dir, removed on drop.
    pub struct TempConfig(pub PathBuf);

    impl TempConfig {
        pub fn new(text: &str) -> TempConfig {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let path = dir.join(format!(
                "cfg-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&path, text).expect("write config");
            TempConfig(path)
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A running `tollgate run` child; killed on drop if still running.
struct Running {
    child: Child,
    addr: SocketAddr,
    /// The admin listener (on a port of its own: tests run in parallel).
    admin: Option<SocketAddr>,
    /// What it printed to stderr after starting.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _cfg: tempfile_path::TempConfig,
}

impl Running {
    fn start(config: &str) -> Running {
        Running::start_with(config, &[])
    }

    /// `tollgate run CONFIG EXTRA...`, waiting until it listens.
    fn start_with(config: &str, extra: &[&str]) -> Running {
        Running::start_limited(config, extra, None)
    }

    /// The same, with soft and hard open-files limits of `nofile`.
    fn start_limited(config: &str, extra: &[&str], nofile: Option<u64>) -> Running {
        let mut text = config.replace("LISTEN", "127.0.0.1:0");
        if !text.contains("[server.admin]") {
            text.push_str("\n[server.admin]\naddr = \"127.0.0.1:0\"\n");
        }
        let cfg = write_config(&text);
        let mut cmd = bin();
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit(2) is async-signal-safe; the closure
            // touches nothing but its copy of `n`.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd
            .arg("run")
            .arg(&cfg.0)
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tollgate");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("tollgate exited before listening")
                .expect("read stderr");
            if let Some(a) = line.strip_prefix("tollgate: listening on http://") {
                break a.parse().expect("addr");
            }
        };
        let admin_enabled = !config.contains("[server.admin]");
        let admin = admin_enabled.then(|| loop {
            let line = lines
                .next()
                .expect("tollgate exited before its admin listener started")
                .expect("read stderr");
            if let Some(a) = line.strip_prefix("tollgate: admin on http://") {
                break a.parse().expect("admin addr");
            }
        });
        // Keep draining stderr so the child never blocks on it.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep.lock().expect("lock").push(l);
            }
        });
        Running {
            child,
            addr,
            admin,
            stderr,
            _cfg: cfg,
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn status_kib(&self, key: &str) -> u64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("status field")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn check_accepts_the_bundled_config() {
    let out = bin()
        .arg("check")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_reports_every_error_with_its_key_path() {
    let cfg = write_config(
        r#"
[[server.listen]]
addr = "not an address"
tls = false
[[api]]
name = "a"
[[api.route]]
key = "GET /x/{p+}/y"
integration = { type = "http", uri = "ftp://example/" }
"#,
    );
    let out = bin().arg("check").arg(&cfg.0).output().expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.listen[0].addr",
        "api[0].route[0].key",
        "api[0].route[0].integration.uri",
        "3 error(s)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn run_refuses_an_invalid_config() {
    let cfg = write_config("[server]\nshardz = 1\n");
    let out = bin().arg("run").arg(&cfg.0).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.shardz"));
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let origin =
        Origin::start(|_| Reply::After(Duration::from_millis(600), Box::new(ok("finished"))));
    let mut gw = Running::start(&proxy_config(origin.addr, ""));
    let mut busy = Client::connect(gw.addr);
    busy.send(b"GET /api/slow HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut idle = Client::connect(gw.addr);
    assert_eq!(idle.get("/mock").status, 200);
    // Let the slow request reach the origin, then ask the gateway to stop.
    let t = Instant::now();
    while origin.requests().is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    gw.signal(libc::SIGTERM);
    let r = busy
        .read_response(false)
        .expect("in-flight request completes");
    assert_eq!((r.status, r.text()), (200, "finished".to_string()));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        idle.is_closed(),
        "idle keep-alive connections are closed on drain"
    );
    let status = gw.wait_exit(Duration::from_secs(5)).expect("gateway exits");
    assert!(status.success(), "{status:?}");
    assert!(
        std::net::TcpStream::connect(gw.addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn drain_deadline_bounds_shutdown() {
    let origin = Origin::start(|_| Reply::After(Duration::from_secs(20), Box::new(ok("never"))));
    let mut gw = Running::start(&proxy_config(
        origin.addr,
        "[server.timeouts]\ndrain = \"300ms\"",
    ));
    let mut busy = Client::connect(gw.addr);
    busy.send(b"GET /api/stuck HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("gateway exits after the drain deadline");
    assert!(status.success());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn memory_stays_bounded_for_large_bodies() {
    const DOWN: usize = 50 * 1024 * 1024;
    const UP: usize = 10 * 1024 * 1024 - 1;
    let origin = Origin::bulk(DOWN);
    let gw = Running::start(&proxy_config(origin.addr, ""));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.get("/mock").status, 200);
    let before = gw.status_kib("VmRSS:");

    let r = c.get("/api/down");
    assert_eq!(r.body.len(), DOWN);
    c.send(format!("POST /api/up HTTP/1.1\r\nHost: t\r\nContent-Length: {UP}\r\n\r\n").as_bytes());
    let block = vec![b'u'; 1 << 20];
    let mut left = UP;
    while left > 0 {
        let n = left.min(block.len());
        c.send(&block[..n]);
        left -= n;
    }
    let r = c.read_response(false).expect("upload response");
    assert_eq!(r.text(), UP.to_string());

    let peak = gw.status_kib("VmHWM:");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 8 * 1024,
        "peak RSS grew by {growth} KiB while streaming 50 MB down and 10 MB up (before {before} KiB, peak {peak} KiB)"
    );
    let _ = std::io::stdout().flush();
}

#[test]
fn tune_prints_a_profile_that_validates() {
    let out = bin().arg("tune").output().expect("run tune");
    assert!(out.status.success());
    let profile = String::from_utf8(out.stdout).expect("utf8");
    assert!(profile.contains("[server.runtime]"), "{profile}");
    let file = write_config(&profile);
    let out = bin()
        .arg("check")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .arg("--profile")
        .arg(&file.0)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_profiles_run() {
    for p in ["laptop", "edge-16c", "edge-64c-numa"] {
        let profile = format!("{}/tuning/{p}.toml", env!("CARGO_MANIFEST_DIR"));
        let config = proxy_config("127.0.0.1:9".parse().expect("addr"), "");
        let mut gw = Running::start_with(&config, &["--profile", &profile]);
        assert_eq!(
            Client::connect(gw.addr).get("/mock").status,
            200,
            "profile {p}"
        );
        gw.signal(libc::SIGTERM);
        let status = gw.wait_exit(Duration::from_secs(5)).expect("exits");
        assert!(status.success(), "profile {p}: {status:?}");
    }
}

fn keyed_status(addr: SocketAddr) -> u16 {
    keyed_get(addr).status
}

#[test]
fn quota_counts_survive_kill_9_after_a_flush() {
    let state = state_dir("kill9");
    let cfg = quota_config(&state, 2, 5, "DAY");
    {
        let mut gw = Running::start(&cfg);
        for _ in 0..3 {
            assert_eq!(keyed_status(gw.addr), 200);
        }
        std::thread::sleep(Duration::from_millis(1500));
        gw.signal(libc::SIGKILL);
        assert!(gw.wait_exit(Duration::from_secs(5)).is_some());
    }
    // The store counted what was handed out before it was spent (the
    // durable mark): the crash admits nothing twice, and costs at most
    // the mark's reserve (here one request beyond the three spent).
    let gw = Running::start(&cfg);
    let statuses: Vec<u16> = (0..4).map(|_| keyed_status(gw.addr)).collect();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert!((1..=2).contains(&admitted), "{statuses:?}");
    assert!(
        statuses[admitted..].iter().all(|&s| s == 429),
        "{statuses:?}"
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&state);
}

/// Requests `GET /prod/x` with the key on `conns` keep-alive connections
/// until the gateway stops answering or `stop` is set; returns (200s,
/// 429s).
fn keyed_load(
    addr: SocketAddr,
    conns: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    use std::sync::atomic::Ordering;
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                let mut c = Client::connect(addr);
                let req =
                    format!("GET /prod/x HTTP/1.1\r\nHost: t\r\nx-api-key: {QUOTA_KEY}\r\n\r\n");
                while !stop.load(Ordering::Relaxed) {
                    if c.try_send(req.as_bytes()).is_err() {
                        break;
                    }
                    match c.read_response(false) {
                        Some(r) if r.status == 200 => ok += 1,
                        Some(r) if r.status == 429 => refused += 1,
                        _ => break,
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or((0, 0)))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[test]
fn repeated_kill_9_under_load_never_over_admits_a_quota() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let limit = 30_000u64;
    let state = state_dir("kill9-load");
    let cfg = quota_config(&state, 2, limit, "DAY");
    let (mut admitted, mut worst_rate) = (0u64, 0f64);
    let crashes = 4;
    for _ in 0..crashes {
        let mut gw = Running::start(&cfg);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let addr = gw.addr;
        let load = {
            let stop = stop.clone();
            std::thread::spawn(move || keyed_load(addr, 8, stop))
        };
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(700));
        // Mid-load: the crash costs at most the reserve outstanding.
        gw.signal(libc::SIGKILL);
        assert!(gw.wait_exit(Duration::from_secs(5)).is_some());
        stop.store(true, Ordering::Relaxed);
        let (ok, _) = load.join().expect("load");
        worst_rate = worst_rate.max(ok as f64 / t0.elapsed().as_secs_f64());
        admitted += ok;
    }
    // What is left, served to the end.
    let gw = Running::start(&cfg);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let addr = gw.addr;
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || keyed_load(addr, 4, stop))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while keyed_status(gw.addr) == 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, refused) = load.join().expect("load");
    admitted += ok;
    drop(gw);
    assert!(refused > 0, "the quota was never used up");
    // Never over: every crash counted what shards had been handed. The
    // requests in flight at each kill (at most one per connection) may
    // have been admitted without their answer arriving: counted too.
    let in_flight = 8 * crashes as u64;
    assert!(
        admitted + in_flight <= limit,
        "admitted {admitted} (+ up to {in_flight} in flight) of {limit}"
    );
    // Under by at most the reserve per crash: twice 100 ms of the rate
    // (the floor is 1% of the limit), with room for the requests in
    // flight at the kill.
    let per_crash = 2.0 * (worst_rate * 0.1).max(limit as f64 / 100.0) + 64.0;
    let floor = limit as f64 - crashes as f64 * per_crash;
    println!(
        "kill -9 x{crashes} at up to {worst_rate:.0} req/s: admitted {admitted} of {limit} (lower bound {floor:.0})"
    );
    assert!(
        admitted as f64 >= floor,
        "admitted {admitted}, bound {floor:.0}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn quota_counts_survive_sigterm_at_once() {
    let state = state_dir("term");
    let cfg = quota_config(&state, 2, 5, "DAY");
    {
        let mut gw = Running::start(&cfg);
        for _ in 0..4 {
            assert_eq!(keyed_status(gw.addr), 200);
        }
        // No wait for a periodic flush: shutdown writes the counters.
        gw.signal(libc::SIGTERM);
        assert!(gw
            .wait_exit(Duration::from_secs(15))
            .is_some_and(|s| s.success()));
    }
    let gw = Running::start(&cfg);
    let statuses: Vec<u16> = (0..2).map(|_| keyed_status(gw.addr)).collect();
    assert_eq!(statuses, [200, 429]);
    drop(gw);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_damaged_quota_store_is_named_and_reset_quotas_starts_afresh() {
    let state = state_dir("damaged");
    let cfg = quota_config(&state, 1, 5, "DAY");
    {
        let mut gw = Running::start(&cfg);
        for _ in 0..3 {
            assert_eq!(keyed_status(gw.addr), 200);
        }
        gw.signal(libc::SIGTERM);
        assert!(gw.wait_exit(Duration::from_secs(15)).is_some());
    }
    let file = state.join("quotas.redb");
    let mut text = cfg.replace("LISTEN", "127.0.0.1:0");
    text.push_str("\n[server.admin]\nenabled = false\n");
    let conf = write_config(&text);
    // Damaged two ways: a page zeroed, and an empty file (which must not
    // pass for a new store and give every key its quota back).
    // Every page after the header zeroed (which pages hold data
    // depends on how the store was written).
    let zero_page = |f: &std::path::Path| {
        use std::io::{Seek, SeekFrom};
        let len = std::fs::metadata(f).expect("store").len();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .expect("store");
        file.seek(SeekFrom::Start(8192)).expect("seek");
        file.write_all(&vec![0u8; len.saturating_sub(8192) as usize])
            .expect("zero");
    };
    let empty = |f: &std::path::Path| std::fs::write(f, b"").expect("truncate");
    let damages: [&dyn Fn(&std::path::Path); 2] = [&zero_page, &empty];
    for damage in damages {
        damage(&file);
        // Bounded: a gateway that starts on a damaged store would run on.
        let mut child = bin()
            .arg("run")
            .arg(&conf.0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("tollgate started on a damaged quota store");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("quota store"))
            .unwrap_or_else(|| panic!("no quota store line: {stderr}"));
        assert!(
            line.contains(&file.display().to_string()) && line.contains("--reset-quotas"),
            "{line}"
        );
    }
    // The way out: fresh counters, the damaged file kept aside.
    let gw = Running::start_with(&cfg, &["--reset-quotas"]);
    let statuses: Vec<u16> = (0..6).map(|_| keyed_status(gw.addr)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    drop(gw);
    let kept = std::fs::read_dir(&state)
        .expect("state dir")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("quotas.redb.reset-")
        });
    assert!(kept, "the damaged store was not kept aside");
    let _ = std::fs::remove_dir_all(&state);
}

/// Writes `text` over the running gateway's config file.
fn rewrite(gw: &Running, text: &str) {
    let mut text = text.replace("LISTEN", &gw.addr.to_string());
    text.push_str("\n[server.admin]\naddr = \"127.0.0.1:0\"\n");
    std::fs::write(&gw._cfg.0, text).expect("rewrite config");
}

fn body_of(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = Client::connect(addr).get(path);
    (r.status, r.text())
}

#[test]
fn sighup_and_reload_command_apply_a_new_config_or_keep_the_old() {
    let origin = Origin::ok("backend");
    let v1 = proxy_config(origin.addr, "");
    let gw = Running::start(&v1);
    assert_eq!(body_of(gw.addr, "/mock"), (200, "mocked".into()));

    // SIGHUP: the new route answers, the old one is gone.
    let v2 = v1.replace("GET /mock", "GET /mock2");
    rewrite(&gw, &v2);
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while body_of(gw.addr, "/mock2").0 != 200 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(body_of(gw.addr, "/mock").0, 404);

    // `tollgate reload` with an invalid file: exit 1, every error shown,
    // the running configuration stays. The admin address comes from the
    // command line here (the file's says port 0).
    let admin = gw.admin.expect("admin listener").to_string();
    rewrite(&gw, &v2.replace("GET /mock2", "GET /mock3/{p+}/x"));
    let out = bin()
        .args(["reload", "--admin", &admin])
        .output()
        .expect("run reload");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api[0].route[0].key"), "{err}");
    assert!(err.contains("the running configuration stays"), "{err}");
    assert_eq!(body_of(gw.addr, "/mock2"), (200, "mocked".into()));

    // A valid file: exit 0 and a report.
    rewrite(&gw, &v1);
    let out = bin()
        .args(["reload", "--admin", &admin])
        .output()
        .expect("run reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["generation"], 2);
    assert_eq!(body_of(gw.addr, "/mock"), (200, "mocked".into()));
    assert_eq!(body_of(gw.addr, "/api/x"), (200, "backend".into()));
}

#[test]
fn sigusr1_reopens_access_logs_after_rotation() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let log = dir.join(format!("proc-access-{}.log", std::process::id()));
    let rotated = log.with_extension("log.1");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
    let origin = Origin::ok("backend");
    let config = proxy_config(origin.addr, "").replace(
        "[[api]]\nname = \"t\"",
        &format!(
            "[[api]]\nname = \"t\"\n[[api.stage]]\nname = \"$default\"\naccess_log = {{ destination = \"{}\", format = \"clf\" }}",
            log.display()
        ),
    );
    let gw = Running::start(&config);
    let wait_lines = |path: &std::path::Path, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(body_of(gw.addr, "/mock").0, 200);
    let first = wait_lines(&log, 1);
    assert!(first.contains("\"GET /mock HTTP/1.1\" 200"), "{first}");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.signal(libc::SIGUSR1);
    // The writer reopens within its idle check (500 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "SIGUSR1 did not reopen the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(body_of(gw.addr, "/api/x").0, 200);
    let second = wait_lines(&log, 1);
    assert!(second.contains("\"GET /api/x HTTP/1.1\" 200"), "{second}");
    assert_eq!(wait_lines(&rotated, 1).lines().count(), 1);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
}

/// One request the way HTTP clients send it: on a reused connection that
/// closes before any response byte, an idempotent request is sent again
/// on a new connection (RFC 9112 §9.3.1); anything else is a failure.
fn client_get(conn: &mut Option<Client>, addr: SocketAddr, path: &str) -> Result<Resp, String> {
    for attempt in 0..2 {
        let reused = conn.is_some();
        let c = conn.get_or_insert_with(|| Client::connect(addr));
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let resp = c
            .try_send(req.as_bytes())
            .ok()
            .and_then(|()| c.read_response(false));
        match resp {
            Some(r) => {
                if r.header("connection") == Some("close") {
                    *conn = None;
                }
                return Ok(r);
            }
            None => {
                *conn = None;
                if !reused || attempt == 1 {
                    return Err(format!("{path}: no response on a new connection"));
                }
            }
        }
    }
    Err(format!("{path}: no response"))
}

/// A binary upgrade's successor, killed when the test ends however it
/// ends.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the successor this test caused to start.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

/// Sends SIGUSR2 to `old`, waits for it to exit 0 after its successor
/// took over, and returns the successor (its pid is in old's stderr).
fn upgrade(old: &mut Running) -> Successor {
    old.signal(libc::SIGUSR2);
    let status = old
        .wait_exit(Duration::from_secs(30))
        .expect("old process exits");
    assert!(status.success(), "{status:?}");
    // Its stderr reaches the reader thread a moment after it exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = old.stderr.lock().expect("lock").join("\n");
        let pid = text
            .lines()
            .find_map(|l| l.split_once("upgrade: new process ").map(|(_, rest)| rest))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok());
        match pid {
            Some(p) => return Successor(p),
            None if Instant::now() > deadline => panic!("no upgrade line in:\n{text}"),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn binary_upgrade_under_load_fails_no_request() {
    let origin = Origin::ok("backend");
    // The load runs as fast as the machine allows: past the default
    // account limit (10,000 r/s, burst 5,000) on a fast one, whose 429s
    // are not what this test looks for.
    let mut old = Running::start(&proxy_config(
        origin.addr,
        "[server.throttle]\nenabled = false\n",
    ));
    let addr = old.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let results = std::sync::Arc::new(std::sync::Mutex::new((0u64, Vec::<String>::new())));
    let mut load = Vec::new();
    for t in 0..4 {
        let (stop, results) = (stop.clone(), results.clone());
        load.push(std::thread::spawn(move || {
            let mut conn = None;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                n += 1;
                if n.is_multiple_of(5) {
                    conn = None;
                }
                let path = if n.is_multiple_of(2) {
                    "/mock"
                } else {
                    "/api/x"
                };
                let r = client_get(&mut conn, addr, path);
                let mut g = results.lock().expect("lock");
                match r {
                    Ok(r) if r.status == 200 => g.0 += 1,
                    Ok(r) => g.1.push(format!("thread {t}: {path} status {}", r.status)),
                    Err(e) => g.1.push(format!("thread {t}: {e}")),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let guard = upgrade(&mut old);
    let pid = guard.0;
    let before_exit = results.lock().expect("lock").0;
    // The successor serves alone now.
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, std::sync::atomic::Ordering::Release);
    for t in load {
        t.join().expect("load thread");
    }
    let (ok, failures) = results.lock().expect("lock").clone();
    // The successor's admin listener is the inherited one.
    let admin = old.admin.expect("admin");
    let status = Client::connect(admin).get("/status");
    let s: serde_json::Value = serde_json::from_slice(&status.body).expect("json");
    // SAFETY: kill(2) of the successor this test caused to start.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        ok > before_exit + 50,
        "no load after the switch: {ok} vs {before_exit}"
    );
    assert_eq!(s["pid"], pid);
    // The successor drains and exits on SIGTERM too.
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "successor did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);
}

#[test]
fn binary_upgrade_hands_the_quota_store_over() {
    let state = state_dir("upgrade-quota");
    let mut old = Running::start(&quota_config(&state, 1, 100, "DAY"));
    let addr = old.addr;
    for _ in 0..3 {
        assert_eq!(keyed_get(addr).status, 200);
    }
    let _successor = upgrade(&mut old);
    // The successor opened the store the old process released, and counts
    // on from what it wrote.
    assert_eq!(keyed_get(addr).status, 200);
    let admin = old.admin.expect("admin");
    // At least the 3 from before and the 1 since, once the shard settled
    // its lease (at its next tick).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let metrics = Client::connect(admin).get("/metrics").text();
        let used = metrics
            .lines()
            .find(|l| l.starts_with("tollgate_quota_used{quota=\"p/alice\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok());
        if used.is_some_and(|u| u >= 4) {
            break;
        }
        assert!(Instant::now() < deadline, "{used:?}\n{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&state);
}

/// Out of file descriptors (issue 18, item 6): with a limit of 128 and
/// 250 clients holding idle keep-alive connections, every client and a
/// new one are served (idle connections are closed, longest idle first,
/// to make room), and the gateway says what happened once, not per
/// failure. Before: nothing logged, new clients timed out until old
/// connections closed.
#[test]
fn out_of_descriptors_new_clients_are_served_and_it_is_said() {
    let cfg = "[server]\nshards = 1\n[[server.listen]]\naddr = \"LISTEN\"\ntls = false\n[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /x\"\nintegration = { type = \"mock\", body = \"ok\" }\n";
    // This process holds two descriptors per client: its own soft limit
    // goes up to the hard one first.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let gw = Running::start_limited(cfg, &[], Some(128));
    let req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held = Vec::new();
    let mut answered = 0;
    for _ in 0..250 {
        let mut c = Client::connect(gw.addr);
        c.set_read_timeout(Duration::from_secs(3));
        if c.try_send(req).is_ok() && c.read_response(false).is_some_and(|r| r.status == 200) {
            answered += 1;
        }
        held.push(c);
    }
    assert_eq!(
        answered, 250,
        "clients went unanswered at the descriptor limit"
    );
    let started = Instant::now();
    let mut c = Client::connect(gw.addr);
    c.send(req);
    assert_eq!(c.read_response(false).map(|r| r.status), Some(200));
    assert!(started.elapsed() < Duration::from_secs(1));
    let said: Vec<String> = gw
        .stderr
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.contains("accept failed"))
        .cloned()
        .collect();
    assert!(
        !said.is_empty() && said.len() <= 2,
        "expected one rate-limited line, got {said:?}"
    );
    assert!(said[0].contains("Too many open files"), "{said:?}");
}

#[test]
fn check_warns_when_the_open_files_limit_is_below_what_the_config_holds() {
    use std::os::unix::process::CommandExt;
    // One shard, a backlog of 4,096: about 4,400 descriptors.
    let text = proxy_config("127.0.0.1:9".parse().expect("addr"), "backlog = 4096");
    let cfg = write_config(&text.replace("LISTEN", "127.0.0.1:0"));
    let run = |limit: u64| {
        let mut cmd = bin();
        // SAFETY: setrlimit(2) is async-signal-safe; the closure touches
        // nothing but its copy of `limit`.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
        let out = cmd.arg("check").arg(&cfg.0).output().expect("check");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let low = run(1024);
    assert!(
        low.contains("warning: open-files limit 1024 is below the"),
        "{low}"
    );
    assert!(!run(65_536).contains("open-files limit"));
}

/// `tollgate reload CONFIG` takes the token from `server.admin.token`
/// (issue 18, item 10: it was ignored and the reload got 401).
#[test]
fn reload_command_reads_the_admin_token_from_the_config() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let origin = Origin::ok("backend");
    let text = proxy_config(origin.addr, "")
        + &format!("\n[server.admin]\naddr = \"{free}\"\ntoken = \"s3cret-admin-token-0123\"\n");
    let gw = Running::start(&text);
    let reload = |extra: &[&str]| {
        bin()
            .arg("reload")
            .arg(&gw._cfg.0)
            .args(extra)
            .env_remove("TOLLGATE_ADMIN_TOKEN")
            .output()
            .expect("run reload")
    };
    let out = reload(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token given on the command line wins (and here is wrong).
    let out = reload(&["--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
