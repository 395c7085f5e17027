"""Turns compare.sh's measurements (TSV: data set, tool, run, measure, value, peak RSS KiB) into
benches/RESULTS.md: medians over the runs, the best peer on each figure, Cairn's ratio to it and
to the floors, and the targets of issue 17.
`table.py --flush-seconds LOG` prints how long a Cairn restore waited for its flush (from its
JSON log).
Usage: table.py RESULTS "SET:FILES:BYTES:FILES_AFTER:BYTES_AFTER ..." MIXED_DESCRIPTION VERSION..."""
import json
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone

if sys.argv[1] == "--flush-seconds":
    # compare.sh asks how long Cairn's restore waited for its flush: read its JSON log
    for line in open(sys.argv[2]):
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message") == "restore done":
            print(fields["flush_seconds"])
    sys.exit(0)

results, set_specs, mixed_description = sys.argv[1], sys.argv[2].split(), sys.argv[3]
versions = sys.argv[4:]
sets = {}
for spec in set_specs:
    name, files, size, files_after, size_after = spec.split(":")
    sets[name] = {
        "files": int(files),
        "mb": int(size) / 1e6,
        "files_after": int(files_after),
        "mb_after": int(size_after) / 1e6,
    }
values = defaultdict(list)
rss = defaultdict(int)
runs = set()
for line in open(results):
    data_set, tool, run, measure, value, peak = line.rstrip("\n").split("\t")
    runs.add(run)
    values[data_set, tool, measure].append(float(value))
    rss[data_set, tool, measure] = max(rss[data_set, tool, measure], int(peak))


def med(data_set, tool, measure):
    return statistics.median(values[data_set, tool, measure])


TOOLS = ["cairn", "restic", "rustic", "borg"]
PEERS = TOOLS[1:]
NAMES = {"cairn": "Cairn", "restic": "restic", "rustic": "rustic", "borg": "Borg"}


def rows(s):
    """(label, unit, higher is better, figure per tool, floor or None, target or None) of a set.
    A target is (text, test of Cairn ÷ best peer and Cairn ÷ floor)."""
    mb, mb_after = sets[s]["mb"], sets[s]["mb_after"]
    unchanged_target = (
        "≤ 0.5× best peer, ≤ 2× `find`",
        lambda peer, floor: peer <= 0.5 and floor is not None and floor <= 2,
    )
    if s == "small":
        restore_target = (
            "≥ 1.5× best peer, ≥ 0.9× `cp -a` + `sync`",
            lambda peer, floor: peer >= 1.5 and floor is not None and floor >= 0.9,
        )
        initial_target = None
    else:
        restore_target = ("≥ 1.5× best peer", lambda peer, floor: peer >= 1.5)
        initial_target = ("≥ 2× best peer", lambda peer, floor: peer >= 2)
    backup_rss = lambda t: max(rss[s, t, m] for m in ("initial", "unchanged", "changed")) / 1024
    return [
        ("initial backup", "MB/s", True, lambda t: mb / med(s, t, "initial"), None, initial_target),
        ("unchanged re-backup", "s", False, lambda t: med(s, t, "unchanged"),
         med(s, "floor", "find"), unchanged_target),
        ("re-backup after a day of changes", "s", False, lambda t: med(s, t, "changed"), None, None),
        ("restore, to the data on disk", "MB/s", True, lambda t: mb_after / med(s, t, "restore"),
         mb_after / med(s, "floor", "restore"), restore_target),
        ("repository size after 3 backups", "MB", False, lambda t: med(s, t, "repo_bytes") / 1e6,
         None, None),
        ("peak RSS of the backups", "MB", False, backup_rss, None, None),
        ("peak RSS of the restore", "MB", False, lambda t: rss[s, t, "restore"] / 1024, None, None),
    ]


def table(s):
    out = [
        "| measure | Cairn | restic | rustic | Borg | best peer | Cairn ÷ best peer | floor "
        "| Cairn ÷ floor | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for label, unit, higher, fig, floor, target in rows(s):
        f = {t: fig(t) for t in TOOLS}
        best = (max if higher else min)(PEERS, key=lambda t: f[t])
        to_peer = f["cairn"] / f[best]
        to_floor = f["cairn"] / floor if floor else None
        goal, met = (target[0], "yes" if target[1](to_peer, to_floor) else "no") if target else ("—", "")
        out.append(
            f"| {label} ({unit}) | "
            + " | ".join(f"{f[t]:.2f}" for t in TOOLS)
            + f" | {f[best]:.2f} ({NAMES[best]}) | {to_peer:.2f}× | "
            + (f"{floor:.2f} | {to_floor:.2f}×" if floor else "— | —")
            + f" | {goal} | {met} |"
        )
    return out


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
mem = sh("free -g | awk '/Mem:/{print $2}'")
fs = sh("df -T /var/tmp | awk 'NR==2{print $2}'")
describe = {
    "mixed": f"{mixed_description}; its day of changes also runs 6000 pgbench transactions",
    "small": "small files made by `bench-data small` (deterministic: log-normal sizes, 70 % text, "
    "30 % random bytes, 3 % copies of another file, about 40 files a folder in folders of varying "
    "depth)",
}
title = {"mixed": "Mixed data", "small": "Small files"}
out = [
    "# Benchmark results",
    "",
    "Written by `benches/compare.sh` (every figure below comes from that one command, in one run).",
    "",
    f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    f"- Machine: {sh('nproc')} cores ({cpu}), {mem} GiB RAM, Linux {platform.release()}; "
    f"data on {fs}, warm page cache",
    f"- Tools: {'; '.join(versions)}; every tool with its default settings "
    "(restic and rustic: repository v2, auto compression; Borg: `-e repokey`, lz4; Cairn: zstd 1), "
    "local repositories",
]
for s, d in sets.items():
    out.append(
        f"- {title[s]}: {d['files']} files, {d['mb']:.0f} MB — {describe[s]}. After the day of "
        f"changes: {d['files_after']} files, {d['mb_after']:.0f} MB."
    )
out += [
    "- A day of changes (`bench-data change`, the same for every tool): of the files in path order, "
    "every 20th touched, every 50th edited in the middle (4 KiB), every 50th appended (4 KiB), "
    "every 100th deleted; new files: 1 % as many as there were, and 20 MiB of random bytes.",
    f"- Median of {len(runs)} run{'s' if len(runs) > 1 else ''}; each run starts from an empty repository. Restores are timed "
    "until `sync` returns, so that every tool is timed to the data on disk (Cairn's restore flushes "
    "by itself; the others return with the data in the page cache). Sizes are apparent sizes "
    "(`du -sb`: the sparse image counts whole).",
    "- Floors, in the same runs: `find -printf '%s %T@ %i'` over the tree (single-threaded, warm "
    "cache), for the unchanged re-backup; `cp -a` + `sync` of the changed tree, for the restore "
    "(MB/s).",
    "",
]
for s in sets:
    out += [f"## {title[s]}", ""] + table(s) + [""]
if "mixed" in sets:
    s, mb = "mixed", sets["mixed"]["mb"]
    limit = mb / med(s, "limit", "limit")
    initial = mb / med(s, "cairn", "initial")
    flush = med(s, "cairn", "flush")
    unflushed = sets[s]["mb_after"] / statistics.median(
        r - f for r, f in zip(values[s, "cairn", "restore"], values[s, "cairn", "flush"])
    )
    out += [
        f"Cairn's restore of the mixed data ends with one flush of the file system, which waited "
        f"**{flush:.2f} s** (median); without that wait and the `sync` after it: "
        f"**{unflushed:.2f} MB/s**.",
        "",
        f"Machine limit (chunk + keyed hash + zstd at the default level + AES-256-GCM over the mixed data held in "
        f"memory, all cores, no I/O): **{limit:.0f} MB/s**. Cairn's initial backup reaches "
        f"**{100 * initial / limit:.0f} %** of it (target ≥ 70 %).",
        "",
    ]
out += [
    "Ratios: for MB/s higher is better; for seconds, MB and RSS lower is better. Peak RSS across "
    "numbers of files and blobs: `benches/SCALE.md`.",
]
print("\n".join(out))
