#!/usr/bin/env bash
# Side-by-side benchmark: Cairn, restic and Borg on the same data, in one run, each with its
# default settings. Installs restic, Borg and PostgreSQL from Debian when missing, builds a data
# set like a Kubernetes volume (thousands of real files of mixed sizes, plus a PostgreSQL data
# directory made by initdb + pgbench), and times, for each tool and each of RUNS runs (median
# reported): initial backup, unchanged re-backup, re-backup after a day of changes (files
# touched, edited in the middle, appended, new files, deletions, database transactions), full
# restore; plus repository size and peak RSS. Also measures the machine's own limit (chunk +
# hash + compress + encrypt on all cores, no I/O). Writes benches/RESULTS.md.
#
# Usage: benches/compare.sh            (as root; RUNS=3 by default; about 15 minutes here)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
BENCH=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
[ -n "$PGBIN" ] || need+=(postgresql)
[ -x /usr/bin/time ] || need+=(time)
command -v rsync >/dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
scripts/setup.sh
cargo build --release --locked -p cairn -p cairn-benches --bins
CAIRN=$CARGO_TARGET_DIR/release/cairn
LIMIT=$CARGO_TARGET_DIR/release/machine-limit

# ---- the data set: base/ (before) and changed/ (after a day of changes), built once ----------
pg() { # pg DATADIR COMMAND... : run a PostgreSQL server on DATADIR (unix socket only) around COMMAND
  local dir=$1; shift
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir" -o "-k $BENCH/sock -c listen_addresses=''" -w -l "$BENCH/sock/pg.log" start >/dev/null
  runuser -u postgres -- "$@" -h "$BENCH/sock" postgres >/dev/null 2>&1
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir" -w -m fast stop >/dev/null
}
if [ ! -f "$BENCH/dataset.done" ]; then
  rm -rf "$BENCH"; mkdir -p "$BENCH/sock"; chown postgres "$BENCH/sock"
  base=$BENCH/base; mkdir -p "$base/files"
  cp -a /usr/share/doc "$base/files/doc"
  cp -a "$(ls -d /usr/lib/python3.* | sort -V | tail -1)" "$base/files/python"
  mkdir -p "$base/files/lib"
  find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -size +16k | sort | head -n 400 |
    xargs -I{} cp -a {} "$base/files/lib/"
  mkdir -p "$base/pgdata"; chown postgres "$base/pgdata"
  runuser -u postgres -- "$PGBIN/initdb" -D "$base/pgdata" >/dev/null
  pg "$base/pgdata" "$PGBIN/pgbench" -i -s 20
  # a day of changes, the same for every tool: prepared once in changed/
  cp -a "$base" "$BENCH/changed"; ch=$BENCH/changed
  mapfile -t all < <(cd "$ch/files" && find . -type f | sort)
  n=${#all[@]}
  for ((i = 0; i < n; i += 20)); do touch "$ch/files/${all[i]}"; done                  # 5% touched
  for ((i = 3; i < n; i += 50)); do                                                     # 2% edited in the middle
    f=$ch/files/${all[i]}; s=$(stat -c %s "$f")
    [ "$s" -gt 8192 ] && head -c 4096 /dev/urandom | dd of="$f" bs=1 seek=$((s / 2)) conv=notrunc status=none
  done
  for ((i = 7; i < n; i += 50)); do head -c 16384 /dev/urandom >> "$ch/files/${all[i]}"; done   # 2% appended
  for ((i = 11; i < n; i += 100)); do rm -f "$ch/files/${all[i]}"; done                # 1% deleted
  mkdir -p "$ch/files/new"                                                              # new data
  for i in $(seq 1 10); do head -c $((2 << 20)) /dev/urandom > "$ch/files/new/blob-$i"; done
  cp -a /usr/share/common-licenses "$ch/files/new/licenses"
  pg "$ch/pgdata" "$PGBIN/pgbench" -c 2 -t 3000                                        # transactions
  touch "$BENCH/dataset.done"
fi
files=$(find "$BENCH/base" -type f | wc -l)
files_after=$(find "$BENCH/changed" -type f | wc -l)
bytes=$(du -sb "$BENCH/base" | cut -f1)
mb=$(python3 -c "print($bytes / 1e6)")

# ---- the runs ---------------------------------------------------------------------------------
export HOME=$BENCH/home RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench CAIRN_PASSWORD=bench
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
W=$BENCH/work      # the backed-up folder (always the same path)
R=$BENCH/restore
results=$BENCH/results.tsv
: > "$results"
timed() { # timed TOOL RUN MEASURE COMMAND... : appends seconds and peak RSS (KiB)
  local tool=$1 run=$2 what=$3; shift 3
  /usr/bin/time -f "%e %M" -o "$BENCH/time.out" "$@" >/dev/null 2>"$BENCH/cmd.err" ||
    { cat "$BENCH/cmd.err" >&2; exit 1; }
  read -r secs rss < "$BENCH/time.out"
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$what" "$secs" "$rss" >> "$results"
}
backup() {
  case $1 in
    cairn) "$CAIRN" --quiet --repo "$BENCH/repo" backup "$W" ;;
    restic) restic --quiet -r "$BENCH/repo" backup "$W" ;;
    borg) borg create "$BENCH/repo::{now:%Y-%m-%dT%H:%M:%S.%f}" "$W" ;;
  esac
}
restore() {
  case $1 in
    cairn) "$CAIRN" --quiet -v --log-format json --repo "$BENCH/repo" restore latest --target "$R" ;;
    restic) restic --quiet -r "$BENCH/repo" restore latest --target "$R" ;;
    borg) (cd "$R" && borg extract "$BENCH/repo::$(borg list --last 1 --short "$BENCH/repo")") ;;
  esac
}
init() {
  case $1 in
    cairn) "$CAIRN" --quiet --repo "$BENCH/repo" init ;;
    restic) restic --quiet -r "$BENCH/repo" init ;;
    borg) borg init -e repokey "$BENCH/repo" ;;
  esac
}
export -f backup restore init
export CAIRN BENCH W R
for run in $(seq 1 "$RUNS"); do
  for tool in cairn restic borg; do
    echo "run $run/$RUNS: $tool" >&2
    rm -rf "$W" "$R" "$BENCH/repo" "$HOME"; mkdir -p "$R" "$HOME"
    cp -a "$BENCH/base" "$W"
    sync
    init "$tool" >/dev/null 2>&1
    timed "$tool" "$run" initial bash -c "backup $tool"
    timed "$tool" "$run" unchanged bash -c "backup $tool"
    rsync -a --delete --inplace "$BENCH/changed/" "$W/"
    sync
    timed "$tool" "$run" changed bash -c "backup $tool"
    printf '%s\t%s\t%s\t%s\t0\n' "$tool" "$run" repo_bytes "$(du -sb "$BENCH/repo" | cut -f1)" >> "$results"
    timed "$tool" "$run" restore bash -c "restore $tool"
    restored=$(find "$R" -type f | wc -l)
    [ "$restored" -eq "$files_after" ] || { echo "$tool restored $restored files of $files_after" >&2; exit 1; }
    if [ "$tool" = cairn ]; then # how long its restore waited for the final flush (its log says)
      flush=$(python3 "$ROOT/benches/table.py" --flush-seconds "$BENCH/cmd.err")
      printf 'cairn\t%s\tflush\t%s\t0\n' "$run" "$flush" >> "$results"
    fi
  done
  # the machine's limit, in the same run
  read -r _ secs mbps < <("$LIMIT" "$BENCH/base")
  printf 'limit\t%s\tlimit\t%s\t0\n' "$run" "$secs" >> "$results"
done

python3 "$ROOT/benches/table.py" "$results" "$mb" "$files" \
  "$("$CAIRN" --version)" "$(restic version | head -1)" "$(borg --version)" \
  "$("$PGBIN/postgres" --version)" > "$ROOT/benches/RESULTS.md"
cat "$ROOT/benches/RESULTS.md"
