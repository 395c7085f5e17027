#!/usr/bin/env bash
# Side-by-side benchmark: Cairn, restic, rustic and Borg on the same data, in one run, each with
# its default settings, on two data sets:
# - mixed: system files (/usr/share/doc, a Python standard library, 400 shared libraries), a
#   PostgreSQL data directory (initdb + pgbench), random files and a sparse disk image;
# - small: many small files in folders of varying depth (bench-data small: deterministic).
# For each data set, tool and each of RUNS runs (median reported), from an empty repository:
# initial backup, unchanged re-backup, re-backup after a day of changes (bench-data change:
# files touched, edited in the middle, appended, deleted, new; plus pgbench transactions on the
# mixed set), full restore of the last snapshot followed by `sync` (every tool is timed to the
# data on disk); repository size and peak RSS. Floors in the same run: a single-threaded
# `find -printf '%s %T@ %i'` over the tree (for the unchanged re-backup) and `cp -a` + `sync` of
# the restored files (for the restore); the machine's own limit for new data (chunk + hash +
# compress + encrypt on all cores, no I/O) on the mixed set. Writes benches/RESULTS.md with the
# best peer on each figure and the targets of issue 17.
#
# Usage, as root: benches/compare.sh
#   RUNS=3          runs (median reported)
#   SIZE=full       full: mixed about 2.9 GB, small 300,000 files of 1.9 GB in all (about 2.5 h
#                   here with RUNS=3, 25 GB of disk); quick: a few MB of each, to try the script
#                   (in /var/tmp/cairn-bench-quick, leaving the full sets alone; it then writes
#                   RESULTS-quick.md there)
#   SETS="mixed small", SMALL_FILES, SMALL_MB, PG_SCALE, RANDOM_MB, SPARSE_MB override the sizes.
# Data sets are built once under /var/tmp/cairn-bench (CAIRN_BENCH_DIR), keyed by their sizes;
# sets of other sizes are deleted there. rustic is built once into /var/tmp/cairn-bench-tools
# (CAIRN_BENCH_TOOLS) from the crates registry; restic, Borg and PostgreSQL come from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
SIZE=${SIZE:-full}
BENCH=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
[ "${SIZE:-full}" = full ] || BENCH=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench-quick}
TOOLS=${CAIRN_BENCH_TOOLS:-/var/tmp/cairn-bench-tools}
RUSTIC_VERSION=0.11.4
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}
case $SIZE in
  full) d=(full 20 512 1024 300000 1900) ;;
  quick) d=(python 1 16 64 3000 19) ;;
  *) echo "SIZE is full or quick" >&2; exit 2 ;;
esac
SYSTEM=${SYSTEM:-${d[0]}} PG_SCALE=${PG_SCALE:-${d[1]}} RANDOM_MB=${RANDOM_MB:-${d[2]}}
SPARSE_MB=${SPARSE_MB:-${d[3]}} SMALL_FILES=${SMALL_FILES:-${d[4]}} SMALL_MB=${SMALL_MB:-${d[5]}}
SETS=${SETS:-mixed small}
OUT=$ROOT/benches/RESULTS.md
[ "$SIZE" = full ] || OUT=$BENCH/RESULTS-quick.md

# ---- tools -------------------------------------------------------------------------------------
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
RUSTIC=$TOOLS/bin/rustic
if ! [ -x "$RUSTIC" ] || ! "$RUSTIC" --version | grep -q "$RUSTIC_VERSION"; then
  echo "building rustic $RUSTIC_VERSION (once; about 30 minutes on 2 cores)" >&2
  started=$(date +%s)
  cargo install --quiet --locked rustic-rs --version "$RUSTIC_VERSION" --root "$TOOLS" \
    --target-dir "$TOOLS/build"
  rm -rf "$TOOLS/build"
  echo "rustic built in $(($(date +%s) - started)) s" >&2
fi
scripts/setup.sh
cargo build --release --locked -p cairn -p cairn-benches --bins
CAIRN=$CARGO_TARGET_DIR/release/cairn
LIMIT=$CARGO_TARGET_DIR/release/machine-limit
DATA=$CARGO_TARGET_DIR/release/bench-data

# ---- the data sets, built once: base/ (before); the day of changes is applied to a copy --------
MIXED=$BENCH/mixed-$SYSTEM-pg$PG_SCALE-random$RANDOM_MB-sparse$SPARSE_MB
SMALL=$BENCH/small-$SMALL_FILES-${SMALL_MB}mb
mkdir -p "$BENCH"
for old in "$BENCH"/{mixed-,small-}* "$BENCH"/{base,changed,dataset.done}; do
  # sets of other sizes and the former layout: their disk is needed
  case $old in "$MIXED" | "$SMALL") ;; *) rm -rf "$old" ;; esac
done
pg() { # pg DATADIR COMMAND... : run a PostgreSQL server on DATADIR (unix socket only) around COMMAND
  local dir=$1; shift
  mkdir -p "$BENCH/sock"; chown postgres "$BENCH/sock"
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir" -o "-k $BENCH/sock -c listen_addresses=''" -w -l "$BENCH/sock/pg.log" start >/dev/null
  runuser -u postgres -- "$@" -h "$BENCH/sock" postgres >/dev/null 2>&1
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir" -w -m fast stop >/dev/null
}
if [[ " $SETS " == *" mixed "* && ! -f $MIXED/done ]]; then
  echo "building the mixed data set in $MIXED" >&2
  rm -rf "$MIXED"; f=$MIXED/base/files; mkdir -p "$f/images"
  cp -a "$(ls -d /usr/lib/python3.* | sort -V | tail -1)" "$f/python"
  if [ "$SYSTEM" = full ]; then
    cp -a /usr/share/doc "$f/doc"
    mkdir -p "$f/lib"
    find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -size +16k | sort | head -n 400 |
      xargs -I{} cp -a {} "$f/lib/"
  fi
  for i in 1 2 3 4; do "$DATA" random "$f/images/media-$i" $((RANDOM_MB / 4)); done
  "$DATA" sparse "$f/images/disk.img" "$SPARSE_MB"
  mkdir -p "$MIXED/base/pgdata"; chown postgres "$MIXED/base/pgdata"
  runuser -u postgres -- "$PGBIN/initdb" -D "$MIXED/base/pgdata" >/dev/null
  pg "$MIXED/base/pgdata" "$PGBIN/pgbench" -i -s "$PG_SCALE"
  # the database after a day of transactions, the same for every tool
  cp -a "$MIXED/base/pgdata" "$MIXED/pgdata-changed"
  pg "$MIXED/pgdata-changed" "$PGBIN/pgbench" -c 2 -t 3000
  touch "$MIXED/done"
fi
if [[ " $SETS " == *" small "* && ! -f $SMALL/done ]]; then
  echo "building the small-files data set in $SMALL" >&2
  rm -rf "$SMALL"
  "$DATA" small "$SMALL/base" "$SMALL_FILES" "$SMALL_MB" >/dev/null
  touch "$SMALL/done"
fi
base() { case $1 in mixed) echo "$MIXED/base" ;; small) echo "$SMALL/base" ;; esac; }

# ---- the runs ---------------------------------------------------------------------------------
export HOME=$BENCH/home RESTIC_PASSWORD=bench RUSTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export CAIRN_PASSWORD=bench BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
W=$BENCH/work      # the backed-up folder (always the same path)
R=$BENCH/restore   # where the tool at work restores (restore-TOOL; see fresh)
REPO=$BENCH/repo
results=$BENCH/results.tsv
: > "$results"
timed() { # timed SET TOOL RUN MEASURE COMMAND... : appends seconds and peak RSS (KiB)
  local set=$1 tool=$2 run=$3 what=$4; shift 4
  /usr/bin/time -f "%e %M" -o "$BENCH/time.out" "$@" >/dev/null 2>"$BENCH/cmd.err" ||
    { cat "$BENCH/cmd.err" >&2; exit 1; }
  read -r secs rss < "$BENCH/time.out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$set" "$tool" "$run" "$what" "$secs" "$rss" >> "$results"
}
record() { # record SET TOOL RUN MEASURE VALUE
  printf '%s\t%s\t%s\t%s\t%s\t0\n' "$@" >> "$results"
}
backup() {
  case $1 in
    cairn) "$CAIRN" --quiet --repo "$REPO" backup "$W" ;;
    restic) restic --quiet -r "$REPO" backup "$W" ;;
    rustic) "$RUSTIC" --no-progress -r "$REPO" backup "$W" ;;
    borg) borg create "$REPO::{now:%Y-%m-%dT%H:%M:%S.%f}" "$W" ;;
  esac
}
restore() { # to the data on disk: Cairn flushes by itself, the others return before
  case $1 in
    cairn) "$CAIRN" --quiet -v --log-format json --repo "$REPO" restore latest --target "$R" ;;
    restic) restic --quiet -r "$REPO" restore latest --target "$R" ;;
    rustic) "$RUSTIC" --no-progress -r "$REPO" restore latest "$R" ;;
    borg) (cd "$R" && borg extract "$REPO::$(borg list --last 1 --short "$REPO")") ;;
  esac && sync
}
init() {
  case $1 in
    cairn) "$CAIRN" --quiet --repo "$REPO" init ;;
    restic) restic --quiet -r "$REPO" init ;;
    rustic) "$RUSTIC" --no-progress -r "$REPO" init ;;
    borg) borg init -e repokey "$REPO" ;;
  esac
}
export -f backup restore init
export CAIRN RUSTIC REPO W R
# Deleting hundreds of thousands of files leaves ext4 slow to hand out new inodes for minutes
# (about twice the time for a 300,000-file restore made right after): W is brought back to the
# set's base/ by rsync (only what the day of changes touched), each tool restores into a folder
# of its own, and those are deleted only between sets, followed by a pause.
fresh() { # fresh SET TOOL : W holds the set's base/, R is restore-TOOL, empty; no repository
  rm -rf "$REPO" "$HOME"; mkdir -p "$HOME"
  R=$BENCH/restore-$2; rm -rf "$R"; mkdir -p "$R"; export R
  rsync -a --delete "$(base "$1")/" "$W/"
  sync
}
SETTLE=${SETTLE:-300} # seconds of pause after deleting the restore folders
restored_away() { # deletes every restore folder, then lets the file system settle
  rm -rf "$BENCH"/restore-*; sync
  sleep "$SETTLE"
}
changes() { # changes SET : a day of changes to W, the same on every call
  case $1 in
    mixed) rsync -a --delete --inplace "$MIXED/pgdata-changed/" "$W/pgdata/"
           "$DATA" change "$W/files" ;;
    small) "$DATA" change "$W" ;;
  esac >/dev/null
  sync
}
restored() { # restored SET WHO : every file of the changed tree is in R
  local n; n=$(find "$R" -type f | wc -l)
  [ "$n" -eq "${after_files[$1]}" ] || { echo "$2 restored $n files of ${after_files[$1]}" >&2; exit 1; }
}
declare -A files bytes after_files after_bytes
for set in $SETS; do
  files[$set]=$(find "$(base "$set")" -type f | wc -l)
  bytes[$set]=$(du -sb "$(base "$set")" | cut -f1)
done
for run in $(seq 1 "$RUNS"); do
  for set in $SETS; do
    echo "run $run/$RUNS, $set: floors" >&2
    fresh "$set" cp
    find "$W" -printf '%s %T@ %i\n' >/dev/null # warm, like the re-backup after a backup
    timed "$set" floor "$run" find find "$W" -printf '%s %T@ %i\n'
    changes "$set"
    after_files[$set]=$(find "$W" -type f | wc -l)
    after_bytes[$set]=$(du -sb "$W" | cut -f1)
    timed "$set" floor "$run" restore bash -c "cp -a '$W' '$R/' && sync"
    restored "$set" "cp -a"
    for tool in cairn restic rustic borg; do
      echo "run $run/$RUNS, $set: $tool" >&2
      fresh "$set" "$tool"
      init "$tool" >/dev/null 2>&1
      timed "$set" "$tool" "$run" initial bash -c "backup $tool"
      timed "$set" "$tool" "$run" unchanged bash -c "backup $tool"
      changes "$set"
      timed "$set" "$tool" "$run" changed bash -c "backup $tool"
      record "$set" "$tool" "$run" repo_bytes "$(du -sb "$REPO" | cut -f1)"
      timed "$set" "$tool" "$run" restore bash -c "restore $tool"
      restored "$set" "$tool"
      if [ "$tool" = cairn ]; then # how long its restore waited for the final flush (its log says)
        record "$set" cairn "$run" flush "$(python3 "$ROOT/benches/table.py" --flush-seconds "$BENCH/cmd.err")"
      fi
    done
    rm -rf "$REPO" "$HOME"
    if [ "$run" = "$RUNS" ] && [ "$set" = "${SETS##* }" ]; then
      rm -rf "$BENCH"/restore-* "$W"
    else
      restored_away
    fi
    if [ "$set" = mixed ]; then # the machine's limit, in the same run
      read -r _ secs _ < <("$LIMIT" "$MIXED/base")
      record mixed limit "$run" limit "$secs"
    fi
  done
done

system="system files (/usr/share/doc, a Python standard library, 400 shared libraries)"
[ "$SYSTEM" = full ] || system="a Python standard library"
sets=()
for set in $SETS; do
  sets+=("$set:${files[$set]}:${bytes[$set]}:${after_files[$set]}:${after_bytes[$set]}")
done
python3 "$ROOT/benches/table.py" "$results" "${sets[*]}" \
  "$system; a PostgreSQL data directory (initdb + pgbench -i -s $PG_SCALE); four files of random bytes ($RANDOM_MB MB in all); a sparse disk image ($SPARSE_MB MB, 32 extents of data of up to 2 MiB)" \
  "$("$CAIRN" --version)" "$(restic version | head -1)" "$("$RUSTIC" --version)" \
  "$(borg --version)" "$("$PGBIN/postgres" --version)" > "$OUT"
cat "$OUT"
