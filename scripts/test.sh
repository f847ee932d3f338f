#!/usr/bin/env bash
# Install everything the tests need (ffmpeg from Debian, a venv with the project
# and its test extras), then run ruff, mypy and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients the end-to-end tests drive: ffmpeg/ffprobe, rtmpdump (librtmp), VLC.
missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v rtmpdump >/dev/null || missing+=(rtmpdump)
command -v cvlc >/dev/null || missing+=(vlc-bin vlc-plugin-base)
# Headless Chromium for the browser tests, npm for the players they load.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
# nginx-rtmp as a relay peer in the tests (and as the benchmarks' yardstick).
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing+=(libnginx-mod-rtmp)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat

# hls.js and mpegts.js for the browser tests, at the versions tests/web pins.
if [ ! -f tests/web/node_modules/.package-lock.json ] \
        || [ tests/web/package-lock.json -nt tests/web/node_modules/.package-lock.json ]; then
    (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

.venv/bin/ruff check lal_twisted tests twisted
.venv/bin/mypy lal_twisted
# The suite in two runs, and both must pass; pytest exits 5 when it collects
# nothing: that is a failure here too.  First the tests that mostly wait on real
# clients and servers (media plays in real time: a test process uses about a
# fifth of a core), in three processes per core (pytest-xdist; an idle one takes
# tests queued for another, as their durations vary widely; LAL_TEST_WORKERS
# sets another number); then the ones marked ``serial`` (they judge wall-clock
# time or CPU tightly: latency bounds, timeouts, benchmarks, the soak), alone,
# so that no other test's load skews them.
workers=${LAL_TEST_WORKERS:-$(( $(nproc) * 3 ))}
status=0
.venv/bin/python -m pytest -n "$workers" --dist worksteal -m "not serial" "$@" || status=$?
.venv/bin/python -m pytest -m serial "$@" || status=$?
exit "$status"
