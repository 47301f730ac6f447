#!/usr/bin/env bash
# Benchmark: `cliptag search` at 10⁵ and 10⁶ stored windows of 512 dims, and the ways to
# rank them compared side by side on the same generated data (examples/bench_search.rs:
# clustered unit vectors like CLIP window embeddings; recall against the exact scan).
#
#   scripts/bench-search.sh [N...]          (default: 100000 1000000)
#   BENCH_DIR=/big/disk scripts/bench-search.sh 10000000
#
# The databases (~2.3 KB per window) go to $BENCH_DIR (default /tmp/cliptag-bench), never
# into the repository, and are reused when present. Release build. Figures are for the
# machine it runs on; nothing here asserts.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(100000 1000000)
dir=${BENCH_DIR:-/tmp/cliptag-bench}
mkdir -p "$dir"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
cargo build --release --locked --bin cliptag --example bench_search >&2
bin=target/release/cliptag
gen=target/release/examples/bench_search

echo "## In memory, one thread, 100 queries per method"
first=1
for n in "${sizes[@]}"; do
    # The exact reference holds every vector in memory: 2 KB a window.
    if ((n > 2000000)); then
        echo "($n windows: not compared in memory, the exact reference would need $((n * 2 / 1000000)) GB)"
        continue
    fi
    "$gen" compare --windows "$n" --queries 100 | { ((first)) && cat || tail -n +3; }
    first=0
done

echo
echo "## cliptag search --like (whole process: open, read the index, rescore, print; no model to load)"
table=()
for n in "${sizes[@]}"; do
    db="$dir/search-$n.db"
    if [[ ! -f $db ]]; then
        "$gen" gen --db "$db" --windows "$n"
    elif [[ ! -f $db-codes ]]; then
        "$gen" index --db "$db"
    fi
    for mode in index exact; do
        flag=
        [[ $mode == exact ]] && flag=--exact
        "$bin" search --db "$db" --like 1 --limit 10 $flag >/dev/null 2>&1   # warm the page cache
        walls=()
        rss=0
        for _ in 1 2 3 4 5; do
            /usr/bin/time -f '%e %M' -o "$dir/time.txt" "$bin" search --db "$db" --like 1 --limit 10 $flag >/dev/null 2>&1
            read -r wall rss <"$dir/time.txt"
            walls+=("$wall")
        done
        median=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n 3p)
        table+=("| $n | $mode | $(du -h "$db" | cut -f1) + $(du -h "$db-codes" | cut -f1) | $median | $((rss / 1024)) |")
    done
done
echo "| windows | method | database + index | wall s (median of 5, page cache warm) | peak RSS MB |"
echo "|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
