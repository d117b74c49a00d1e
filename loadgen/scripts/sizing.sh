#!/usr/bin/env bash
# What the journal and the heap cost, for docs/operations.md (BENCHMARKS.md, "Sizing"): a
# release lqd fed by the demo source (200,000 clients on 64 links, its mix of relays and
# delegated prefixes) into a 1 GiB journal, measured twice: with the initial population alone,
# and after 1,000,000 more changes of churn. For each: lqd's memory (VmRSS, RssAnon = heap,
# RssFile = the mapped journal's pages), its bindings and records (the metrics endpoint), then,
# lqd stopped, `lqd journal check` for the octets the records use.
#
#   cargo build --release --bin lqd && bash loadgen/scripts/sizing.sh
#
# Needs curl, ports 5471 and 9571 on [::1], and 2 GiB of disk under OUT (target/sizing).
set -euo pipefail

LQD="${LQD:-target/release/lqd}"
OUT="${OUT:-target/sizing}"
rm -rf "$OUT"
mkdir -p "$OUT"
for churn in 0 1000000; do
    dir="$OUT/churn-$churn"
    mkdir -p "$dir"
    cat >"$dir/lqd.toml" <<TOML
listen = ["[::1]:5471"]
source = "demo"
state_dir = "$dir"
journal_size = 1073741824
metrics_listen = "[::1]:9571"

[demo]
clients = 200000
links = 64
changes_per_sec = 0
churn_limit = $churn
TOML
    "$LQD" --config "$dir/lqd.toml" 2>"$dir/lqd.log" &
    pid=$!
    until grep -q "churn limit reached" "$dir/lqd.log"; do sleep 1; done
    # The demo has sent everything; wait until the loop has applied it (the head stops).
    last=-1
    while :; do
        sleep 2
        head=$(curl -s 'http://[::1]:9571/metrics' | awk '/^lqd_journal_head_sequence /{print $2}')
        [ "$head" = "$last" ] && break
        last=$head
    done
    echo "== churn_limit $churn"
    grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$pid/status"
    curl -s 'http://[::1]:9571/metrics' |
        grep -E '^lqd_(bindings|journal_used_bytes|journal_head_sequence) '
    kill -TERM "$pid"
    wait "$pid" || true
    "$LQD" journal check "$dir/lqd-journal"
done
rm -rf "$OUT"
