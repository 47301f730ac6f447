#!/usr/bin/env bash
# Benchmark: `cliptag search` at 10⁵ and 10⁶ stored windows of 512 dims, and the ways to
# rank them compared side by side on the same generated data (examples/bench_search.rs:
# clustered unit vectors like CLIP window embeddings; recall against the exact scan).
#
#   scripts/bench-search.sh [N...]          (default: 100000 1000000)
#   BENCH_DIR=/big/disk scripts/bench-search.sh 10000000     (42 GB; generating takes ~9 min)
#   CANDIDATES=1000,2000,4000 EXACT_QUERIES=5 scripts/bench-search.sh 10000000
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
echo "## cliptag search --like as a whole process (open, read the index, rescore from SQLite, print; no model to load)"
echo "20 queries spread over the database; warm: each run once before; cold: page cache dropped before each run (root only)."
echo "Recall@10 against \`cliptag search --exact\` for the first 5 queries (EXACT_QUERIES)."
echo
echo "| windows | candidates rescored | warm p50 ms | warm p99 ms | cold p50 ms | cold p99 ms | recall@10 | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
    db="$dir/search-$n.db"
    if [[ ! -f $db ]]; then
        "$gen" gen --db "$db" --windows "$n" >&2
    elif [[ ! -f $db-codes ]]; then
        "$gen" index --db "$db" >&2
    fi
    "$gen" process --db "$db" --bin "$bin" --queries 20 --exact-queries "${EXACT_QUERIES:-5}" \
        --candidates "${CANDIDATES:-default}"
done
