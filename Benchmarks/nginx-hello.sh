#!/usr/bin/env bash
# nginx as a yardstick hello server, in the foreground, at its defaults (2 workers, TLS session tickets
# on, no session cache): GET /hello answers "hello" over mTLS. For blocking-handshakes.sh:
#   --server "nginx=Benchmarks/nginx-hello.sh {port} {pki}"
# Usage: Benchmarks/nginx-hello.sh PORT PKI_DIR [--log-level ignored]
set -euo pipefail
port=$1 pki=$(cd "$2" && pwd)
work=$(mktemp -d /tmp/mtls-nginx.XXXXXX)
mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $pki/server.pem;
        ssl_certificate_key $pki/server.key;
        ssl_client_certificate $pki/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { default_type text/plain; return 200 "hello\n"; }
    }
}
NGINX
exec nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;'
