#!/usr/bin/env bash
# The floor under a full mTLS handshake that no code of ours can lower: the cryptography a TLS 1.3
# server does per full handshake (one ECDSA P-256 signature, one verification of the client's
# CertificateVerify, one X25519 key pair and shared secret), timed in each library on this machine:
# GnuTLS/Nettle (our GnuTLS backend), OpenSSL 3 (our OpenSSL backend) and BoringSSL through
# swift-crypto (what SwiftNIO's NIOSSL handshakes with). See BENCHMARKS.md, "The libraries' floor".
#
# Usage: Benchmarks/library-floor.sh [--rounds 7] [--iterations 500] [--key KEY.pem]
# Without --key, a fresh P-256 key is made with openssl. Needs gcc, pkg-config, libgnutls28-dev and
# libssl-dev (the main package's build needs the last two already); builds the Swift part with
# `swift build -c release --product crypto-floor` in Benchmarks/ (about a minute the first time).
set -euo pipefail
cd "$(dirname "$0")"

rounds=7 iterations=500 key=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --iterations) iterations=$2; shift 2 ;;
        --key) key=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

work=$(mktemp -d /tmp/mtls-floor.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$key" ]; then
    key=$work/key.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>/dev/null
fi

# shellcheck disable=SC2046 # pkg-config's flags are several words on purpose
gcc -O2 -Wall -Werror -o "$work/floor" library-floor/floor.c $(pkg-config --cflags --libs gnutls nettle hogweed openssl)
swift build -c release --product crypto-floor >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
swift_floor=$(swift build -c release --show-bin-path)/crypto-floor

echo "per-handshake cryptography of a TLS 1.3 mTLS server, ECDSA P-256 + X25519, $rounds rounds of $iterations, median (min-max)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "libraries: GnuTLS $(pkg-config --modversion gnutls), Nettle $(pkg-config --modversion nettle), OpenSSL $(pkg-config --modversion openssl)"
"$work/floor" "$key" "$rounds" "$iterations"
"$swift_floor" "$key" "$rounds" "$iterations"
