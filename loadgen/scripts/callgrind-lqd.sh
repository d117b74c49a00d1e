#!/bin/sh
# lqd under valgrind's callgrind, for `loadgen ... --lqd loadgen/scripts/callgrind-lqd.sh`: an
# instruction count of every lqd thread (callgrind.PID-NN in $LQD_CALLGRIND_DIR, default /tmp),
# the same for the same binary and inputs whatever else the machine does (BENCHMARKS.md
# "Metrics"). $LQD_CALLGRIND_BIN is the lqd to run (default target/release/lqd; build one with
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for line-level profiles).
#
# loadgen ends lqd with SIGKILL, which this shell takes; a watcher then ends lqd with SIGTERM,
# so that it shuts down and callgrind writes its profiles.
out="${LQD_CALLGRIND_DIR:-/tmp}"
bin="${LQD_CALLGRIND_BIN:-target/release/lqd}"
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/callgrind.%p" \
    "$bin" "$@" &
lqd=$!
shell=$$
(
    while kill -0 "$shell" 2>/dev/null; do sleep 0.2; done
    kill -TERM "$lqd" 2>/dev/null
) &
wait "$lqd"
