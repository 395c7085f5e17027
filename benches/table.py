"""Turns compare.sh's measurements (TSV: tool, run, measure, value, peak RSS KiB) into
benches/RESULTS.md: medians over the runs, Cairn's ratio to each peer, and the targets.
`table.py --flush-seconds LOG` prints how long a Cairn restore waited for its flush (from its
JSON log)."""
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

results, mb, files = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
versions = sys.argv[4:]
values = defaultdict(list)
rss = defaultdict(int)
runs = set()
for line in open(results):
    tool, run, measure, value, peak = line.rstrip("\n").split("\t")
    runs.add(run)
    values[tool, measure].append(float(value))
    rss[tool] = max(rss[tool], int(peak))


def med(tool, measure):
    return statistics.median(values[tool, measure])


tools = ["cairn", "restic", "borg"]
limit = mb / med("limit", "limit")
rows = [
    # label, per-tool figure, unit, higher is better
    ("initial backup", lambda t: mb / med(t, "initial"), "MB/s", True),
    ("unchanged re-backup", lambda t: med(t, "unchanged"), "s", False),
    ("re-backup after a day of changes", lambda t: med(t, "changed"), "s", False),
    ("full restore", lambda t: mb / med(t, "restore"), "MB/s", True),
    ("repository size after 3 backups", lambda t: med(t, "repo_bytes") / 1e6, "MB", False),
    ("peak RSS (any command)", lambda t: rss[t] / 1024, "MB", False),
]
targets = {
    "initial backup": ("≥ 2× restic", lambda r: r >= 2),
    "unchanged re-backup": ("≤ 0.5× restic", lambda r: r <= 0.5),
    "re-backup after a day of changes": ("≤ 0.5× restic", lambda r: r <= 0.5),
    "full restore": ("≥ 2× restic", lambda r: r >= 2),
    "repository size after 3 backups": ("≤ restic", lambda r: r <= 1),
    "peak RSS (any command)": ("≤ 0.5× restic", lambda r: r <= 0.5),
}


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
mem = sh("free -g | awk '/Mem:/{print $2}'")
fs = sh("df -T /var/tmp | awk 'NR==2{print $2}'")
out = [
    "# Benchmark results",
    "",
    "Written by `benches/compare.sh` (every figure below comes from that one command, in one run).",
    "",
    f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    f"- Machine: {sh('nproc')} cores ({cpu}), {mem} GiB RAM, Linux {platform.release()}; "
    f"data on {fs}, warm page cache",
    f"- Tools: {'; '.join(versions)}; every tool with its default settings "
    "(restic: repository v2, auto compression; Borg: `-e repokey`, lz4; Cairn: zstd 3)",
    f"- Data: {files} files, {mb:.0f} MB — /usr/share/doc, a Python standard library, 400 shared "
    "libraries, and a PostgreSQL data directory (initdb + pgbench -i -s 20). A day of changes: 5 % "
    "of the files touched, 2 % edited in the middle, 2 % appended, 1 % deleted, 20 MB of new "
    "files plus a folder of licenses, and 6000 pgbench transactions.",
    f"- Median of {len(runs)} runs; each run starts from an empty repository.",
    "",
    "| measure | Cairn | restic | Borg | Cairn ÷ restic | Cairn ÷ Borg | target | met |",
    "|---|---:|---:|---:|---:|---:|---|---|",
]
for label, fig, unit, higher in rows:
    f = {t: fig(t) for t in tools}
    ratio_r, ratio_b = f["cairn"] / f["restic"], f["cairn"] / f["borg"]
    goal, ok = targets[label]
    out.append(
        f"| {label} ({unit}) | {f['cairn']:.2f} | {f['restic']:.2f} | {f['borg']:.2f} | "
        f"{ratio_r:.2f}× | {ratio_b:.2f}× | {goal} | {'yes' if ok(ratio_r) else 'no'} |"
    )
initial = mb / med("cairn", "initial")
flush = med("cairn", "flush")
unflushed = mb / statistics.median(
    r - f for r, f in zip(values["cairn", "restore"], values["cairn", "flush"])
)
out += [
    "",
    f"Cairn's restore returns once the data is on disk: it ends with one flush of the file system "
    f"(restic and Borg return with the data still in the page cache). That flush waited "
    f"**{flush:.2f} s** (median). The restore without that wait, from the same runs: "
    f"**{unflushed:.2f} MB/s**, {unflushed / (mb / med('restic', 'restore')):.2f}× restic's.",
    "",
    f"Machine limit (chunk + keyed hash + zstd 3 + AES-256-GCM over the data held in memory, all "
    f"cores, no I/O): **{limit:.0f} MB/s**. Cairn's initial backup reaches "
    f"**{100 * initial / limit:.0f} %** of it (target ≥ 70 %).",
    "",
    "Ratios: for MB/s higher is better; for seconds, MB and RSS lower is better.",
]
print("\n".join(out))
