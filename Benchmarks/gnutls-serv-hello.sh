#!/usr/bin/env bash
# gnutls-serv as a yardstick server, in the foreground, at its defaults (session tickets on), verifying
# client certificates against the PKI's CA (--verify-client-cert: with --require-client-cert alone,
# gnutls-serv 3.7 accepts a certificate from any CA). Its --http mode answers any GET with a 200 status
# page, so the client must accept any 200 reply. For blocking-handshakes.sh:
#   --expect "" --server "gnutls-serv=Benchmarks/gnutls-serv-hello.sh {port} {pki}"
# Usage: Benchmarks/gnutls-serv-hello.sh PORT PKI_DIR [--log-level ignored]
set -euo pipefail
port=$1 pki=$(cd "$2" && pwd)
exec gnutls-serv --http --require-client-cert --verify-client-cert --x509cafile "$pki/ca.pem" \
    --x509certfile "$pki/server.pem" --x509keyfile "$pki/server.key" -p "$port" -q
