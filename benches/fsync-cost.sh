#!/bin/bash
# How much the flushes of durable folder writes cost a backup (benches/FSYNC_COST.md). Usage:
# benches/fsync-cost.sh with /tmp/cairn-nofsync and /tmp/cairn-fsync the two builds to compare.
# Initial backup of /usr/share/doc + /usr/lib/python3.11 (185 MB, 7000+ files) into a fresh
# folder repository on ext4 (/var/tmp), alternating the binary without fsync (main at 01a8df5)
# and with it (this branch); 5 runs each; `sync` before each run; pack size default (16 MiB)
# and 1 MiB. Prints the median wall time per binary.
set -e
W=/var/tmp/durable-bench; rm -rf $W; mkdir -p $W; echo pw > $W/pw
export CAIRN_PASSWORD_FILE=$W/pw
for pack in 16 1; do
  for i in 1 2 3 4 5; do
    for b in nofsync fsync; do
      export CAIRN_REPOSITORY=$W/repo CAIRN_CACHE_DIR=$W/cache
      /tmp/cairn-$b init --pack-size $pack > /dev/null 2>&1
      sync
      s=$(date +%s.%N)
      /tmp/cairn-$b backup --quiet /usr/share/doc /usr/lib/python3.11 > /dev/null
      e=$(date +%s.%N)
      echo "$pack $b $(echo "$e - $s" | bc) $(find $W/repo -type f | wc -l)"
      rm -rf $W/repo $W/cache
    done
  done
done > $W/times
python3 - $W/times <<'PY'
import sys, statistics, collections
t = collections.defaultdict(list); n = {}
for line in open(sys.argv[1]):
    pack, b, s, objs = line.split(); t[(pack, b)].append(float(s)); n[(pack, b)] = objs
for k in sorted(t):
    print(f"pack {k[0]} MiB, {k[1]}: median {statistics.median(t[k]):.2f} s of {sorted(round(x,2) for x in t[k])}, {n[k]} objects")
PY
