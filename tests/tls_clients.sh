#!/usr/bin/env bash
# Real TLS clients against tollgate: curl and openssl s_client.
#
#   tests/tls_clients.sh TOLLGATE_BINARY
#
# Run by tests/tls_clients.rs (part of `cargo test`). Makes a test PKI with
# openssl (ECDSA P-256: a CA, a server certificate for api.example.com and
# mtls.example.com, a default certificate, client certificates from the CA
# and from another CA), starts tollgate on an ephemeral loopback port, and
# checks: TLS 1.3 and 1.2 handshakes with verification and ALPN, SNI
# certificate selection, base path mappings, Host/SNI mismatch 421, mutual
# TLS with good, missing and wrong-CA client certificates, and session
# resumption (TLS 1.2 session ids, TLS 1.3 tickets). Exits non-zero on the
# first failed check. Stops the gateway it started by PID.
set -euo pipefail

BIN=${1:?usage: tls_clients.sh TOLLGATE_BINARY}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-tls-clients.XXXXXX")
GW_PID=
cleanup() {
    [[ -n $GW_PID ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

fail() {
    echo "FAIL: $*" >&2
    [[ -f gw.log ]] && sed 's/^/  gateway: /' gw.log >&2
    exit 1
}
pass() { echo "ok: $*"; }

# ------------------------------------------------------------------ PKI --
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
ca() { # name
    ec "$1-key.pem"
    openssl req -x509 -new -key "$1-key.pem" -subj "/CN=$1" -days 2 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem" 2>/dev/null
}
leaf() { # name ca subject-cn san eku
    ec "$1-key.pem"
    openssl req -new -key "$1-key.pem" -subj "/CN=$3/O=Tollgate Tests" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$4" "$5" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial \
        -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
ca ca
ca otherca
leaf server ca "api" "DNS:api.example.com,DNS:mtls.example.com" serverAuth
leaf default ca "default" "DNS:default.test,IP:127.0.0.1" serverAuth
leaf client ca "client one" "DNS:client.test" clientAuth
leaf intruder otherca "intruder" "DNS:client.test" clientAuth

# -------------------------------------------------------------- gateway --
cat >gw.toml <<EOF
[server]
shards = 1
state_dir = "$WORK/state"
[server.admin]
enabled = false
[[server.listen]]
addr = "127.0.0.1:0"
certificate = "$WORK/default.pem"
key = "$WORK/default-key.pem"

[[api]]
name = "orders"
hosts = ["orders.internal"]
[[api.stage]]
name = "prod"
[[api.route]]
key = "GET /items"
integration = { type = "mock", status = 200, body = "orders items" }

[[api]]
name = "root"
hosts = ["root.internal"]
[[api.route]]
key = "GET /hello"
integration = { type = "mock", status = 200, body = "root hello" }

[[domain]]
name = "api.example.com"
certificate = "$WORK/server.pem"
key = "$WORK/server-key.pem"
[[domain.mapping]]
base_path = "v1"
api = "orders"
stage = "prod"
[[domain.mapping]]
api = "root"
stage = "\$default"

[[domain]]
name = "mtls.example.com"
certificate = "$WORK/server.pem"
key = "$WORK/server-key.pem"
mtls = { truststore = "$WORK/ca.pem", mode = "required" }
[[domain.mapping]]
api = "root"
stage = "\$default"
EOF
"$BIN" run gw.toml >gw.log 2>&1 &
GW_PID=$!
PORT=
for _ in $(seq 1 100); do
    PORT=$(sed -n 's#.*listening on https://127.0.0.1:\([0-9]*\).*#\1#p' gw.log | head -n 1)
    [[ -n $PORT ]] && break
    kill -0 "$GW_PID" 2>/dev/null || fail "gateway exited"
    sleep 0.1
done
[[ -n $PORT ]] || fail "gateway did not report its https port"
pass "gateway on https://127.0.0.1:$PORT"

API="--resolve api.example.com:$PORT:127.0.0.1"
MTLS="--resolve mtls.example.com:$PORT:127.0.0.1"

# ----------------------------------------------------------------- curl --
out=$(curl -sS --max-time 10 --cacert ca.pem $API "https://api.example.com:$PORT/v1/items" \
    -w ' %{http_code} %{http_version}')
[[ $out == "orders items 200 1.1" ]] || fail "curl TLS 1.3 base path mapping: $out"
pass "curl: HTTPS, verified, base path /v1 -> orders/prod"

out=$(curl -sS --max-time 10 --cacert ca.pem --tlsv1.2 --tls-max 1.2 $API \
    "https://api.example.com:$PORT/hello" -w ' %{http_code}')
[[ $out == "root hello 200" ]] || fail "curl TLS 1.2 root mapping: $out"
pass "curl: TLS 1.2, root mapping"

out=$(curl -sS --max-time 10 --cacert ca.pem -0 $API "https://api.example.com:$PORT/hello" \
    -w ' %{http_code}')
[[ $out == "root hello 200" ]] || fail "curl HTTP/1.0 (ALPN http/1.0): $out"
pass "curl: HTTP/1.0 over TLS (ALPN http/1.0 accepted)"

out=$(curl -sS --max-time 10 --cacert ca.pem $API -H 'Host: orders.internal' \
    "https://api.example.com:$PORT/prod/items" -w ' %{http_code}')
[[ $out == '{"message":"Misdirected Request"} 421' ]] || fail "Host/SNI mismatch: $out"
pass "curl: Host differs from SNI -> 421"

out=$(curl -sS --max-time 10 --cacert ca.pem "https://127.0.0.1:$PORT/hello" \
    -H 'Host: root.internal' -w ' %{http_code}')
[[ $out == "root hello 200" ]] || fail "no SNI, default certificate: $out"
pass "curl: no SNI (IP), default certificate verified for 127.0.0.1"

out=$(curl -sS --max-time 10 --cacert ca.pem $MTLS --cert client.pem --key client-key.pem \
    "https://mtls.example.com:$PORT/hello" -w ' %{http_code}')
[[ $out == "root hello 200" ]] || fail "mTLS with a good certificate: $out"
pass "curl: mutual TLS with a client certificate from the truststore"

for who in none intruder; do
    args=()
    [[ $who == intruder ]] && args=(--cert intruder.pem --key intruder-key.pem)
    if out=$(curl -sS --max-time 10 --cacert ca.pem $MTLS "${args[@]}" \
        "https://mtls.example.com:$PORT/hello" -w ' %{http_code}' 2>&1); then
        fail "mTLS without a valid certificate ($who) was served: $out"
    fi
    pass "curl: mutual TLS refused ($who): $(echo "$out" | head -n 1)"
done

out=$(curl -sS --max-time 10 "http://127.0.0.1:$PORT/hello" -H 'Host: root.internal' -w ' %{http_code}')
[[ $out == *"plain HTTP request"*" 400" ]] || fail "plain HTTP on the TLS port: $out"
pass "curl: plain HTTP on the TLS port gets 400"

# -------------------------------------------------------------- openssl --
s_client() { # args...
    timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile ca.pem "$@" </dev/null 2>&1 || true
}
out=$(s_client -tls1_3 -servername api.example.com -alpn http/1.1)
grep -q "Verify return code: 0 (ok)" <<<"$out" || fail "s_client TLS 1.3 verify: $out"
grep -q "ALPN protocol: http/1.1" <<<"$out" || fail "s_client ALPN: $out"
grep -q "TLSv1.3" <<<"$out" || fail "s_client TLS 1.3: $out"
grep -q "subject=CN *= *api" <<<"$out" || fail "s_client SNI api.example.com certificate: $out"
pass "openssl s_client: TLS 1.3, ALPN http/1.1, verified, SNI selects api.example.com's certificate"

out=$(s_client -tls1_2 -servername unknown.example.org)
grep -q "Protocol *: TLSv1.2" <<<"$out" || fail "s_client TLS 1.2: $out"
grep -q "subject=CN *= *default" <<<"$out" || fail "unknown SNI gets the default certificate: $out"
pass "openssl s_client: TLS 1.2; unknown SNI gets the default certificate"

out=$(s_client -tls1_1 -servername api.example.com)
grep -q "Cipher is (NONE)\|no protocols available\|alert protocol version\|wrong version number" <<<"$out" ||
    fail "TLS 1.1 must be refused: $out"
pass "openssl s_client: TLS 1.1 refused"

out=$(s_client -tls1_2 -servername api.example.com -reconnect)
reused=$(grep -c "^Reused, TLSv1.2" <<<"$out" || true)
((reused >= 5)) || fail "TLS 1.2 session resumption: $reused reused of 5 reconnects"
pass "openssl s_client: TLS 1.2 session ids resumed ($reused/5 reconnects)"

# TLS 1.3: a ticket arrives after the handshake; keep the session, then
# offer it on a new connection.
printf 'GET /hello HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n' |
    timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile ca.pem -tls1_3 \
        -servername api.example.com -sess_out sess.pem -ign_eof >first.txt 2>&1 || true
grep -q "root hello" first.txt || fail "TLS 1.3 request via s_client: $(cat first.txt)"
out=$(s_client -tls1_3 -servername api.example.com -sess_in sess.pem)
grep -q "^Reused, TLSv1.3" <<<"$out" || fail "TLS 1.3 ticket resumption: $out"
pass "openssl s_client: TLS 1.3 session ticket resumed"

# A TLS 1.2 client asking to renegotiate gets rustls' no_renegotiation
# alert at once (it used to wait for the keep-alive timer, ~60 s).
mkfifo reneg.in
exec 7<>reneg.in
timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -servername api.example.com \
    -CAfile ca.pem -tls1_2 <reneg.in >reneg.out 2>&1 &
RENEG_PID=$!
for _ in $(seq 1 50); do
    grep -q "Verify return code" reneg.out && break
    sleep 0.1
done
t0=$(date +%s%N)
echo R >&7
wait "$RENEG_PID" || true
t1=$(date +%s%N)
exec 7>&-
grep -q "no renegotiation" reneg.out || fail "renegotiation: no alert: $(tail -n 3 reneg.out)"
(( (t1 - t0) < 2000000000 )) || fail "renegotiation: the alert took $(( (t1 - t0) / 1000000 )) ms"
pass "openssl s_client: TLS 1.2 renegotiation refused at once ($(( (t1 - t0) / 1000000 )) ms)"

echo "all TLS client checks passed"
