# The benchmark matrix: each case's echocast-bench arguments (sourced by
# bench/compare.sh and bench/ab.sh; DURATION is the seconds per run).
# shellcheck shell=bash

# One certificate and key for every TLS server (ECDSA P-256, for localhost),
# made once in DIR: sets TLS_CA (the certificate) and TLS_KEY.
tls_certificate() {
    TLS_CA=$1/cert.pem
    TLS_KEY=$1/key.pem
    if [ ! -s "$TLS_CA" ]; then
        mkdir -p "$1"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
            -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
            -addext basicConstraints=critical,CA:FALSE -addext keyUsage=digitalSignature \
            -addext extendedKeyUsage=serverAuth -keyout "$TLS_KEY" -out "$TLS_CA" 2>/dev/null
    fi
}
scenario_args() {
    local d=$DURATION
    case $1 in
        echo-20) echo "echo -c 100 -s 20 --text --duration $d" ;;
        echo-20-p16) echo "echo -c 100 -s 20 --text -p 16 --duration $d" ;;
        echo-1k) echo "echo -c 100 -s 1024 --duration $d" ;;
        echo-64k) echo "echo -c 10 -s 65536 --duration $d" ;;
        echo-16m) echo "echo -c 1 -s 16777216 --duration $d" ;;
        latency) echo "echo -c 1 -s 20 --text --duration $d" ;;
        broadcast-1000) echo "broadcast -c 1000 -s 20 --duration $d" ;;
        broadcast-16k) echo "broadcast -c 100 -s 16384 --duration $d" ;;
        # The fan-out beside publish-100 (same room size and message size).
        broadcast-100) echo "broadcast -c 100 -s 20 --duration $d" ;;
        # Rooms over HTTP (echocast only): event-stream subscribers fed by a
        # WebSocket member (beside broadcast-1000 and broadcast-1k), and POSTs
        # on 4 kept connections to 100 WebSocket members (beside broadcast-100).
        sse-1000) echo "sse -c 1000 -s 20 --duration $d" ;;
        sse-1k) echo "sse -c 1000 -s 1024 --duration $d" ;;
        publish-100) echo "publish -c 100 -p 4 -s 20 --duration $d" ;;
        connect-50) echo "connect -c 50 --duration $d" ;;
        idle-10k) echo "idle -c 10000" ;;
        # permessage-deflate (peers get PEER_DEFLATE=1): 1 KiB JSON-like text.
        echo-deflate-1k) echo "echo --deflate -c 100 -s 1024 --duration $d" ;;
        idle-deflate-10k) echo "idle --deflate -c 10000" ;;
        broadcast-deflate-1k) echo "broadcast --deflate -c 1000 -s 1024 --duration $d" ;;
        # The uncompressed baseline of broadcast-deflate-1k (same size, same room).
        broadcast-1k) echo "broadcast -c 1000 -s 1024 --duration $d" ;;
        # wss:// (TLS_CA: the certificate every server presents, tls_certificate).
        echo-tls-1k) echo "echo --tls --tls-ca $TLS_CA -c 100 -s 1024 --duration $d" ;;
        echo-tls-16m) echo "echo --tls --tls-ca $TLS_CA -c 1 -s 16777216 --duration $d" ;;
        connect-tls-50) echo "connect --tls --tls-ca $TLS_CA -c 50 --duration $d" ;;
        idle-tls-10k) echo "idle --tls --tls-ca $TLS_CA -c 10000" ;;
        # Through a proxy to an upstream echo (compare.sh): text, so that
        # websocat (which does not keep a message's type) can carry it.
        proxy-20) echo "echo -c 100 -s 20 --text --duration $d" ;;
        proxy-20-p16) echo "echo -c 100 -s 20 --text -p 16 --duration $d" ;;
        proxy-1k) echo "echo -c 100 -s 1024 --text --duration $d" ;;
        proxy-1k-p16) echo "echo -c 100 -s 1024 --text -p 16 --duration $d" ;;
        # WebSockets over HTTP/2 (h2c): 100 streams on one connection, the
        # load of echo-20 / echo-20-p16; 1,000 idle streams on one connection.
        h2-20) echo "h2-echo -c 100 -s 20 --text --duration $d" ;;
        h2-20-p16) echo "h2-echo -c 100 -s 20 --text -p 16 --duration $d" ;;
        h2-idle-1k) echo "h2-idle -c 1000" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}
