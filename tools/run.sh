#!/usr/bin/env bash
# One entry point for a fresh machine: installs what aiopquic needs, then runs
#   bash tools/run.sh demo   - server + client over QUIC on loopback
#   bash tools/run.sh test   - the test suite (asyncio and trio)
#   bash tools/run.sh bench  - benchmarks against aioquic, qh3 and picoquic's own tool
#   bash tools/run.sh bench h3 - the HTTP/3 benchmark (gtlsclient against hypercorn and ours)
#   bash tools/run.sh bench wt - the WebTransport benchmark (against raw QUIC and pywebtransport)
#   bash tools/run.sh sanitize asan|tsan - the in-process tests under AddressSanitizer
#                                      or ThreadSanitizer (see tools/sanitize.sh)
# Everything Python goes into .venv/ (git-ignored); picoquic/picotls sources are
# fetched by the build into subprojects/ (git-ignored) and reused after that.
set -euo pipefail
cd "$(dirname "$0")/.."

command=${1:-}
case "$command" in
  demo|test|bench|sanitize) shift ;;
  *) echo "usage: bash tools/run.sh demo|test|bench|sanitize [args...]" >&2; exit 2 ;;
esac

# System packages: a C compiler, OpenSSL headers, pkg-config; iproute2 (ip, tc)
# for the tests that put client and server in network namespaces.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
{ command -v ip && command -v tc; } >/dev/null 2>&1 || missing+=(iproute2)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
# Build tools first (the editable build runs without isolation), then the package.
# HTTP/3: pylsqpack (runtime), httpx (the optional extra), and the tests'
# independent HTTP/3 peers (hypercorn, curl_cffi, Starlette/FastAPI apps);
# msgpack for webtransport.MessageStream's optional codec; pywebtransport 0.8
# (draft-13) as the tests' independent WebTransport peer; uvloop, the third
# event loop every async test runs on.
$py -m pip install -q --disable-pip-version-check \
  "meson-python>=0.15" "meson>=1.1" ninja "cython>=3.0" \
  "anyio>=4.7" certifi "sniffio>=1.3" "trio>=0.27" "pytest>=8" "aioquic>=1.2" cryptography mypy \
  "pylsqpack>=1.0,<2" "httpx>=0.27" "hypercorn>=0.17" starlette fastapi "curl_cffi>=0.7" "msgpack>=1.0" "pywebtransport==0.8.1" "uvloop>=0.19"
$py -m pip install -q --disable-pip-version-check --no-build-isolation \
  -Cbuild-dir=build -e .

# The benchmark's qh3 peer (aioquic's fork with a Rust core): only for bench. Pinned,
# as benchmarks/peers/qh3_peer.py patches one private detail of qh3 2.1.
if [ "$command" = bench ]; then
  $py -m pip install -q --disable-pip-version-check "qh3==2.1.0"
fi

# The HTTP/3 benchmark's load generator: ngtcp2's gtlsclient (Debian's ngtcp2-client).
if [ "$command" = bench ] && ! command -v gtlsclient >/dev/null 2>&1; then
  echo "installing system package: ngtcp2-client (gtlsclient, the HTTP/3 load generator)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ngtcp2-client >/dev/null
fi

# The browser test (tests/test_wt_chromium.py) drives headless Chromium (Debian's chromium).
if [ "$command" = test ] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing system package: chromium (the WebTransport browser test's peer)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

case "$command" in
  demo) exec $py -m aiopquic demo "$@" ;;
  test) exec $py -m pytest "$@" ;;
  sanitize) exec bash tools/sanitize.sh "$@" ;;
  bench)
    if [ "${1:-}" = h3 ]; then shift; exec $py benchmarks/h3.py "$@"; fi
    if [ "${1:-}" = wt ]; then shift; exec $py benchmarks/wt.py "$@"; fi
    exec $py benchmarks/run.py "$@" ;;
esac
