#!/usr/bin/env bash
# Installs the Debian packages surge needs, only those missing.
#   scripts/deps.sh [build|test|fuzz|bench|bench-jobs]...   (default: build)
# build: compile surge; test: build + unit/integration tests; fuzz: clang
# libFuzzer runtime; bench: nginx, HAProxy and wrk for the comparison runs, and
# http-parser for the old parser that make bench-parse compares ours with.
# dnsmasq-base (the binary only, no system service) and iproute2 serve the
# simulated-hosts tests (deploy/hosts/, tests/integration/test_hosts*.py);
# nodejs and npm run the offline Kubernetes manifest validation
# (scripts/k8s-validate.sh, pinned npm packages installed into build/).
# Runs `apt-get update` at most once, then `apt-get install -y` the rest.
set -euo pipefail

build_pkgs=(build-essential pkg-config libuv1-dev libinih-dev
            libcjson-dev libsodium-dev libsqlite3-dev libcurl4-openssl-dev
            libpq-dev libhiredis-dev libssl-dev)
test_pkgs=(libcriterion-dev python3 python3-pytest curl
           postgresql postgresql-15-auto-failover redis-server redis-sentinel dnsmasq-base iproute2
           nodejs npm openssl
           prometheus python3-yaml chromium chromium-driver python3-selenium)
fuzz_pkgs=(clang libclang-rt-14-dev)
bench_pkgs=(nginx-light haproxy wrk libhttp-parser-dev)
bench_jobs_pkgs=(redis-server nodejs npm)
lint_pkgs=(clang-format)

want=()
[ $# -eq 0 ] && set -- build
for group in "$@"; do
    case "$group" in
    build) want+=("${build_pkgs[@]}") ;;
    test)  want+=("${build_pkgs[@]}" "${test_pkgs[@]}" "${fuzz_pkgs[@]}") ;;
    fuzz)  want+=("${build_pkgs[@]}" "${fuzz_pkgs[@]}") ;;
    bench) want+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    bench-jobs) want+=("${build_pkgs[@]}" "${bench_jobs_pkgs[@]}") ;;
    lint)  want+=("${lint_pkgs[@]}") ;;
    *) echo "deps.sh: unknown group '$group' (build|test|fuzz|bench|bench-jobs|lint)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    # A Node.js that ships its own npm (NodeSource's nodejs package) conflicts
    # with Debian's npm package: a working `npm` command is enough.
    if [ "$p" = npm ] && command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
        continue
    fi
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

# dedupe
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package install scripts must not start system services (nginx on :80):
# the benchmarks start their own instances on loopback ports.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
fi
trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
