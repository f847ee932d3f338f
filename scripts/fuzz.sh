#!/usr/bin/env bash
# Fuzz the parsers with atheris (targets in tests/fuzz/targets.py).
#
#   scripts/fuzz.sh list              the targets
#   scripts/fuzz.sh TARGET SECONDS    fuzz one target for SECONDS
#   scripts/fuzz.sh all SECONDS       each target in turn, SECONDS each
#
# Corpora grow in .fuzz/corpus/TARGET (seeded from ffmpeg output by
# tests/fuzz/seeds.py), crashing inputs land in .fuzz/crashes/; neither is in
# git.  Exits non-zero as soon as a target crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: run scripts/test.sh or install the test extras first" >&2; exit 2; }
"$PY" -c 'import atheris' 2>/dev/null || "$PY" -m pip install --quiet atheris

targets=$("$PY" -c 'import sys; sys.path.insert(0, "tests")
from fuzz.targets import TARGETS; print(" ".join(TARGETS))')

usage() { echo "usage: $0 list | TARGET SECONDS | all SECONDS (targets: $targets)" >&2; exit 2; }

# Inputs past this many bytes add little: a handshake is 3073 bytes, and a chunk
# stream or FLV file this long already holds many messages or tags.
max_len() {
    case "$1" in
        chunk_reader|server_session|flv_reader) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

run_one() {
    local target=$1 seconds=$2
    local corpus=.fuzz/corpus/$target crashes=.fuzz/crashes
    mkdir -p "$corpus" "$crashes"
    if [ -z "$(ls -A "$corpus")" ]; then
        "$PY" tests/fuzz/seeds.py "$target" "$corpus"
    fi
    echo "--- fuzz $target for ${seconds}s ---"
    # -timeout: one input taking over 10 s of CPU is a finding (unbounded work);
    # -rss_limit_mb: so is memory past 2 GiB.
    "$PY" tests/fuzz/run.py "$target" "$corpus" \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/$target-" 2>&1 |
        grep -v -e '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)' -e '^INFO: Instrumenting' -e '^"' -e '^###' \
            -e '^WARNING: Failed to find function'
    return "${PIPESTATUS[0]}"
}

case "${1:-}" in
    list) tr ' ' '\n' <<<"$targets" ;;
    all)
        [ $# -eq 2 ] || usage
        for t in $targets; do run_one "$t" "$2"; done ;;
    "") usage ;;
    *)
        [ $# -eq 2 ] || usage
        grep -qw -- "$1" <<<"$targets" || usage
        run_one "$1" "$2" ;;
esac
