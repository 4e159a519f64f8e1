#!/usr/bin/env python3
"""RSS per idle keep-alive client connection.

Starts `tollgate run` (1 shard, a mock route) on 127.0.0.1, opens N client
connections one after another, sends one request on each and reads its
response, then leaves them all idle and reads the gateway's VmRSS from
/proc. Prints bytes of RSS growth per idle connection.

    python3 bench/idle_conns.py [N]         # default N = 10000
    TOLLGATE_BIN=target/release/tollgate python3 bench/idle_conns.py
    TLS=1 python3 bench/idle_conns.py 2000  # TLS 1.3 connections (the
                                            # development certificate)

The load stays on loopback and ends with the script; the gateway is
stopped by its PID.
"""

import os
import resource
import ssl
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TOLLGATE_BIN", os.path.join(ROOT, "target/release/tollgate"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
TLS = os.environ.get("TLS") == "1"
BODY = b'{"hello":"world"}'

CONFIG = """
[server]
shards = 1
[server.timeouts]
keepalive = "300s"
[[server.listen]]
addr = "127.0.0.1:0"
tls = false
[[api]]
name = "idle"
[[api.route]]
key = "GET /hello"
integration = { type = "mock", body = '{"hello":"world"}' }
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < N + 100:
        sys.exit(f"need {N + 100} file descriptors, hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    state = tempfile.mkdtemp(prefix="tollgate-idle-")
    config = CONFIG
    if TLS:
        config = config.replace("tls = false", "").replace(
            "[server]\n", f'[server]\nstate_dir = "{state}"\n'
        )
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
        cfg = f.name
    ctx = None
    if TLS:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    proc = subprocess.Popen([BIN, "run", cfg], stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            if line.startswith("tollgate: listening on http"):
                port = int(line.strip().rsplit(":", 1)[1])
                break
        if port is None:
            sys.exit("tollgate did not start")
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        socks = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            if ctx is not None:
                s = ctx.wrap_socket(s)
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while not data.endswith(BODY):
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit("connection closed early")
                data += chunk
            socks.append(s)
        time.sleep(1.0)
        after = rss_kib(proc.pid)
        per = (after - before) * 1024 / N
        print(f"idle keep-alive {'TLS ' if TLS else ''}connections: {N}")
        print(f"gateway RSS: {before} KiB before, {after} KiB with them open")
        print(f"RSS per idle connection: {per:.0f} bytes")
        for s in socks:
            s.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(cfg)


if __name__ == "__main__":
    main()
