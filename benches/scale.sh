#!/usr/bin/env bash
# Peak RSS (and wall time) against the number of files and of blobs, written to benches/SCALE.md:
# - files: trees of FILES empty files (bench-data tree: 1000 a folder, 100 folders a parent);
#   Cairn, restic and rustic each: backup, unchanged re-backup, restore, check, copy into a new
#   repository, gc (restic and rustic: prune);
# - blobs: repositories of BLOBS 40-byte blobs (many-blobs --snapshot: one snapshot of files of
#   1000 blobs each, index segments of 500 000 entries); Cairn only (the peers' repositories
#   cannot be made that way, and 10 M real chunks are 10 TB): backup of a small folder into it,
#   restore of the whole snapshot, check, copy, gc.
# Every command runs under `timeout TIME_LIMIT`; a tool that exceeds it or fails at a count is
# shown so and not run at larger counts, nor is one with a step whose time at the last file count,
# in proportion to the files, would exceed it (SCALE.md says which step and by how much). Peak RSS
# is /usr/bin/time's %M.
#
# Usage, as root: benches/scale.sh
#   FILES="1000000 3000000 10000000"  file counts; a count whose tree does not fit in the free
#                                     inodes of the file system (df -i, keeping 1 M spare) is
#                                     left out, and SCALE.md says so
#   BLOBS="1000000 3000000 10000000"  blob counts
#   TIME_LIMIT=3600                   seconds per command
#   PEERS="restic rustic"             the peers measured beside Cairn ("" for Cairn alone)
#   OUT=benches/SCALE.md
#   SETTLE=60                         seconds of pause after deleting a tree before a restore
#                                     (ext4 passes over every inode freed in the last ~35 s, one
#                                     at a time, when it allocates one: a restore right after
#                                     deleting millions of files would measure that)
# Work folder: /var/tmp/cairn-scale (CAIRN_SCALE_DIR), emptied at the start and the end.
# Tools: as compare.sh (restic from Debian, rustic built once into /var/tmp/cairn-bench-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FILES=${FILES:-1000000 3000000 10000000}
BLOBS=${BLOBS:-1000000 3000000 10000000}
TIME_LIMIT=${TIME_LIMIT:-3600}
PEERS=${PEERS-restic rustic}
SETTLE=${SETTLE:-60}
OUT=${OUT:-$ROOT/benches/SCALE.md}
S=${CAIRN_SCALE_DIR:-/var/tmp/cairn-scale}
TOOLS=${CAIRN_BENCH_TOOLS:-/var/tmp/cairn-bench-tools}
RUSTIC_VERSION=0.11.4
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}

peer() { [[ " $PEERS " == *" $1 "* ]]; } # peer TOOL : whether TOOL is measured
if ! [ -x /usr/bin/time ] || { peer restic && ! command -v restic >/dev/null; }; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q restic time >/dev/null
fi
RUSTIC=$TOOLS/bin/rustic
if peer rustic && { ! [ -x "$RUSTIC" ] || ! "$RUSTIC" --version | grep -q "$RUSTIC_VERSION"; }; then
  cargo install --quiet --locked rustic-rs --version "$RUSTIC_VERSION" --root "$TOOLS" \
    --target-dir "$TOOLS/build"
  rm -rf "$TOOLS/build"
fi
scripts/setup.sh
cargo build --release --locked -p cairn -p cairn-benches --bins
CAIRN=$CARGO_TARGET_DIR/release/cairn
DATA=$CARGO_TARGET_DIR/release/bench-data
BLOBMAKER=$CARGO_TARGET_DIR/release/many-blobs

rm -rf "$S"; mkdir -p "$S"
export RESTIC_PASSWORD=bench RESTIC_FROM_PASSWORD=bench RUSTIC_PASSWORD=bench
export CAIRN_PASSWORD=bench CAIRN_FROM_PASSWORD=bench CAIRN_TO_PASSWORD=bench
COPY=$S/copy; R=$S/restore; TREE=$S/tree
results=$S/results.tsv
: > "$results"
declare -A gone # tools that did not finish at a smaller count

measure() { # measure KIND COUNT TOOL STEP [PATH] : seconds, peak RSS and outcome of a step
  local kind=$1 count=$2 tool=$3 what=$4 path=${5:-} status=ok
  echo "$(date +%T) $kind $count $tool $what" >&2
  /usr/bin/time -f "%e %M" -o "$S/time.out" timeout --kill-after=30 "$TIME_LIMIT" \
    bash -c 'step "$@"' step "$tool" "$what" "$path" >/dev/null 2>"$S/cmd.err" || status=$?
  if [ "$status" != ok ]; then
    if [ "$status" = 124 ]; then status=timeout; else tail -5 "$S/cmd.err" >&2; status=failed; fi
    gone[$tool]=1
  fi
  read -r secs rss < <(tail -1 "$S/time.out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$count" "$tool" "$what" "$secs" "$rss" \
    "$status" >> "$results"
  [ "$status" = ok ]
}
use() { # use TOOL : its repository and home folder (cache, configuration)
  export REPO=$S/repo-$1 HOME=$S/home/$1
}
free_inodes() { df --output=iavail "$S" | tail -1 | tr -d ' '; }
over_limit() { # over_limit TOOL LAST N : the step of TOOL whose time at LAST files, in proportion
  # to N files, would exceed TIME_LIMIT (the slowest such), said in words; nothing if none would
  awk -F'\t' -v t="$1" -v last="$2" -v n="$3" -v limit="$TIME_LIMIT" '
    function count(c) { return c >= 1e6 ? sprintf("%g M", c / 1e6) : sprintf("%g k", c / 1e3) }
    $1 == "files" && $2 == last && $3 == t && $7 == "ok" && $5 * n / last > limit \
      && $5 * n / last > worst { worst = $5 * n / last; step = $4; secs = $5 }
    END { if (step == "rebackup") step = "unchanged re-backup"
      if (step) printf "%s at %s files: its %s took %.0f s at %s, %.0f s at %s in proportion, " \
      "over the %d s limit", t, count(n), step, secs, count(last), worst, count(n), limit }' "$results"
}

# what each tool runs for each step (REPO: its repository; COPY: the copy's; R: restore target)
init() {
  case $1 in
    cairn) "$CAIRN" --quiet --repo "$REPO" init ;;
    restic) restic --quiet -r "$REPO" init ;;
    rustic) "$RUSTIC" --no-progress -r "$REPO" init ;;
  esac >/dev/null 2>&1
}
step() { # step TOOL STEP PATH
  local tool=$1 what=${2/rebackup/backup} path=${3:-}
  case $tool:$what in
    cairn:backup) "$CAIRN" --quiet --repo "$REPO" backup "$path" ;;
    cairn:restore) "$CAIRN" --quiet --repo "$REPO" restore latest --target "$R" ;;
    cairn:check) "$CAIRN" --quiet --repo "$REPO" check ;;
    cairn:copy) "$CAIRN" --quiet --repo "$REPO" copy --all --to "$COPY" ;;
    cairn:gc) "$CAIRN" --quiet --repo "$REPO" gc ;;
    restic:backup) restic --quiet -r "$REPO" backup "$path" ;;
    restic:restore) restic --quiet -r "$REPO" restore latest --target "$R" ;;
    restic:check) restic -r "$REPO" check ;;
    restic:copy) restic -r "$COPY" copy --from-repo "$REPO" ;;
    restic:gc) restic -r "$REPO" prune ;;
    rustic:backup) "$RUSTIC" --no-progress -r "$REPO" backup "$path" ;;
    rustic:restore) "$RUSTIC" --no-progress -r "$REPO" restore latest "$R" ;;
    rustic:check) "$RUSTIC" --no-progress -r "$REPO" check ;;
    rustic:copy) "$RUSTIC" --no-progress -r "$REPO" copy --init --target copy ;;
    rustic:gc) "$RUSTIC" --no-progress -r "$REPO" prune ;;
    *) echo "no step $tool:$what" >&2; return 2 ;;
  esac
}
copy_target() { # the repository to copy into, chunked like REPO
  rm -rf "$COPY"
  case $1 in
    cairn) "$CAIRN" --quiet --repo "$COPY" init --copy-chunker-params-from "$REPO" ;;
    restic) restic --quiet -r "$COPY" init --from-repo "$REPO" --copy-chunker-params ;;
    rustic) # by a configuration profile; `copy --init` makes it with the same chunker
      mkdir -p "$HOME/.config/rustic"
      printf '[repository]\nrepository = "%s"\npassword = "bench"\n' "$COPY" \
        > "$HOME/.config/rustic/copy.toml" ;;
  esac >/dev/null 2>&1
}
export -f step
export CAIRN RUSTIC COPY R
restores_then_the_rest() { # restores_then_the_rest KIND COUNT TOOL FILES : restore, check, copy, gc
  local kind=$1 count=$2 tool=$3 expect=$4
  rm -rf "$R"; mkdir -p "$R"; sync; sleep "$SETTLE"
  if measure "$kind" "$count" "$tool" restore; then
    local got; got=$(find "$R" -type f | wc -l)
    [ "$got" -eq "$expect" ] || { echo "$tool restored $got files of $expect" >&2; exit 1; }
  fi
  rm -rf "$R"
  measure "$kind" "$count" "$tool" check || true
  copy_target "$tool"
  measure "$kind" "$count" "$tool" copy || true
  rm -rf "$COPY"
  measure "$kind" "$count" "$tool" gc || true
}

# ---- files -------------------------------------------------------------------------------------
skipped=()
have=0 # files in the tree
last=0 # the last file count measured
for n in $FILES; do
  if [ $((n - have + 1000000)) -gt "$(free_inodes)" ]; then
    skipped+=("$n files: $(free_inodes) free inodes, $((n - have + 1000000)) needed")
    continue
  fi
  tools=()
  for tool in cairn $PEERS; do
    [ -n "${gone[$tool]:-}" ] && continue
    if [ "$last" -gt 0 ] && why=$(over_limit "$tool" "$last" "$n") && [ -n "$why" ]; then
      echo "$(date +%T) left out: $why" >&2
      skipped+=("$why"); gone[$tool]=1; continue
    fi
    tools+=("$tool")
  done
  last=$n
  echo "$(date +%T) tree of $n files" >&2
  "$DATA" tree "$TREE" "$n" >/dev/null
  have=$n
  for tool in "${tools[@]}"; do
    use "$tool"; rm -rf "$REPO" "$HOME"; mkdir -p "$HOME"
    init "$tool"
    if measure files "$n" "$tool" backup "$TREE"; then measure files "$n" "$tool" rebackup "$TREE" || true; fi
  done
  # restores need as many inodes again: the tree goes first when they are short
  if [ $((n + 1000000)) -gt "$(free_inodes)" ]; then rm -rf "$TREE"; have=0; fi
  for tool in "${tools[@]}"; do
    [ -n "${gone[$tool]:-}" ] && continue
    use "$tool"
    restores_then_the_rest files "$n" "$tool" "$n"
    rm -rf "$REPO"
  done
done
rm -rf "$TREE" "$S"/repo-*

# ---- blobs (Cairn) -------------------------------------------------------------------------------
small=$S/small-folder
"$DATA" small "$small" 1000 10 >/dev/null
for n in $BLOBS; do
  [ -n "${gone[cairn]:-}" ] && break
  echo "$(date +%T) repository of $n blobs" >&2
  rm -rf "$S/blobs"
  "$BLOBMAKER" "$S/blobs" "$n" --snapshot >/dev/null
  use cairn
  export REPO=$S/blobs/repo CAIRN_CACHE_DIR=$S/blobs/cache
  restores_then_the_rest blobs "$n" cairn $(((n + 999) / 1000))
  measure blobs "$n" cairn backup "$small" || true
  unset CAIRN_CACHE_DIR
  rm -rf "$S/blobs"
done

versions=$("$CAIRN" --version)
if peer restic; then versions+="; $(restic version | head -1)"; fi
if peer rustic; then versions+="; $("$RUSTIC" --version)"; fi
python3 - "$results" "$TIME_LIMIT" "$versions" "${skipped[@]}" > "$OUT" <<'PY'
import platform, subprocess, sys
from collections import defaultdict
from datetime import datetime, timezone

results, limit, versions, skipped = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
cells = defaultdict(dict)
for line in open(results):
    kind, count, tool, step, secs, rss, status = line.rstrip("\n").split("\t")
    cells[kind, int(count), tool][step] = (float(secs), int(rss) / 1024, status)

def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

def cell(c):
    if c is None:
        return "—"
    secs, mb, status = c
    if status == "timeout":
        return f"over {limit} s"
    if status == "failed":
        return f"failed ({mb:.0f} MB)"
    return f"{mb:.0f} MB, {secs:.1f} s" if secs < 10 else f"{mb:.0f} MB, {secs:.0f} s"

def count(n):
    return f"{n / 1e6:g} M" if n >= 1e6 else f"{n / 1e3:g} k"

out = [
    "# Peak RSS against the number of files and blobs",
    "",
    "Written by `benches/scale.sh` (every figure below comes from that one command, in one run).",
    "",
    f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    f"- Machine: {sh('nproc')} cores, {sh('free -g | awk ' + repr('/Mem:/{print $2}'))} GiB RAM, "
    f"Linux {platform.release()}; repositories on {sh('df -T /var/tmp | awk ' + repr('NR==2{print $2}'))}",
    f"- Tools: {versions}; default settings, local repositories",
    f"- Each cell: peak RSS (`/usr/bin/time` %M), wall time. Every command ran under a limit of "
    f"{limit} s; a tool that went over it or failed is not run at larger counts (—), nor is one "
    f"with a step that, in proportion to the files, would go over it (said below the table).",
    "",
    "## Files",
    "",
    "Trees of empty files (`bench-data tree`: 1000 a folder, 100 folders a parent), backed up, "
    "backed up again unchanged, restored whole, checked (metadata), copied into a new repository "
    "and garbage-collected (restic and rustic: `prune`).",
    "",
    "| files | tool | backup | unchanged re-backup | restore | check | copy | gc / prune |",
    "|---:|---|---|---|---|---|---|---|",
]
steps = ["backup", "rebackup", "restore", "check", "copy", "gc"]
for (kind, n, tool), c in sorted(cells.items(), key=lambda x: (x[0][1], x[0][2] != "cairn", x[0][2])):
    if kind == "files":
        out.append(f"| {count(n)} | {tool} | " + " | ".join(cell(c.get(s)) for s in steps) + " |")
def growth(kind, tool, steps):
    """Per step: peak RSS at the largest count it finished at ÷ at the smallest."""
    ratios = []
    for s in steps:
        done = sorted(n for (k, n, t), c in cells.items()
                      if (k, t) == (kind, tool) and c.get(s, (0, 0, ""))[2] == "ok")
        if len(done) > 1:
            lo, hi = cells[kind, done[0], tool][s][1], cells[kind, done[-1], tool][s][1]
            ratios.append(f"{s} {hi / lo:.2f}× ({count(done[0])} → {count(done[-1])})")
    return [f"- {tool}: " + ", ".join(ratios)] if ratios else []

out += ["", "Peak RSS at the largest count ÷ at the smallest:", ""]
for tool in sorted({t for (k, n, t) in cells if k == "files"}, key=lambda t: (t != "cairn", t)):
    out += growth("files", tool, steps)
for line in skipped:
    out.append(f"\nLeft out: {line}.")
out += [
    "",
    "## Blobs",
    "",
    "Repositories made by `many-blobs COUNT --snapshot`: COUNT data blobs of 40 bytes in 16 MiB "
    "packs, indexed in segments of 500 000 entries, all referred to by one snapshot (files of "
    "1000 blobs, 10 files a folder). Cairn only: the peers' repositories cannot be made this way, "
    "and a real backup of that many chunks holds about 10 TB. Backup: a new snapshot of 1000 small "
    "files (10 MB) into that repository; restore, check, copy and gc: of the whole repository.",
    "",
    "| blobs | backup into it | restore | check | copy | gc |",
    "|---:|---|---|---|---|---|",
]
blob_steps = ["backup", "restore", "check", "copy", "gc"]
for (kind, n, tool), c in sorted(cells.items(), key=lambda x: x[0][1]):
    if kind == "blobs":
        out.append(f"| {count(n)} | " + " | ".join(cell(c.get(s)) for s in blob_steps) + " |")
out += ["", "Peak RSS at the largest count ÷ at the smallest:", ""] + growth("blobs", "cairn", blob_steps)
print("\n".join(out))
PY
rm -rf "$S"
cat "$OUT"
