#!/usr/bin/env bash
# Local put/get beside the tar + zstd pipeline on the same trees, in one run.
#   bench/local.sh            (builds blockctl --release first)
# Trees: examples/flow-project, and a generated 10,000-file tree (seeded, 0.5-8 KiB text-ish).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p blockctl
B=$PWD/target/release/blockctl
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export BLOCKCTL_HOME=$W/home

python3 - "$W/many" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
words = [("w%d" % i) for i in range(500)]
for i in range(10000):
    d = os.path.join(root, "pkg%02d" % (i % 50), "mod%02d" % (i % 7))
    os.makedirs(d, exist_ok=True)
    n = rng.randint(512, 8192)
    text = " ".join(rng.choice(words) for _ in range(n // 4))[:n]
    with open(os.path.join(d, "f%05d.py" % i), "w") as f:
        f.write(text)
PY

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
row() { # name dir
    local name=$1 dir=$2 put get tarc tarx
    sync
    put=$(t "$B" -q put "$dir" "local/default/bench-$name")
    get=$(t "$B" -q get "local/default/bench-$name" "$W/get-$name")
    tarc=$(t sh -c "cd '$dir' && tar -cf - . | zstd -q -3 -T0 > '$W/$name.tar.zst'")
    mkdir -p "$W/untar-$name"
    tarx=$(t sh -c "zstd -q -dc '$W/$name.tar.zst' | tar -xf - -C '$W/untar-$name'")
    diff -r "$dir" "$W/get-$name" >/dev/null
    printf '| %s | %s | %.3f | %.3f | %.3f | %.3f |\n' "$name" "$(find "$dir" -type f | wc -l)" "$put" "$tarc" "$get" "$tarx"
}
echo "| tree | files | blockctl put s | tar+zstd s | blockctl get s | zstd -d + tar -x s |"
echo "|---|---|---|---|---|---|"
row example examples/flow-project
row many "$W/many"
