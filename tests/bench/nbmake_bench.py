"""`nbci check --jobs 2` against `pytest --nbmake -n 2`, for `make bench`.

The peer a user compares nbci with for "run my repository's notebooks in CI"
is nbmake (a pytest plugin) with pytest-xdist. Both run here on the same
notebooks (tests/bench/notebooks: numpy, pandas, matplotlib and scikit-learn,
offline, two of them failing on purpose), with the same interpreter and
packages (the benchmark venv: nbci's driver runs in it through NBCI_PYTHON),
two at a time, alternating round after round so that machine noise hits both
alike. Printed: each tool's median wall time and CPU seconds (all processes),
the ratio, and the verdicts side by side (status, failing cell, error name).
Figures only: nothing here asserts speed.

    .bench-venv/bin/python tests/bench/nbmake_bench.py --nbci target/release/nbci [--rounds 5]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import figures

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = os.path.join(HERE, "notebooks")
ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*m")
# The last line of a traceback: `KeyError: 'revenues'`.
ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): ?", re.M)


def timed(cmd, cwd, env=None):
    """Wall and CPU seconds of `cmd`, which may fail notebooks (exit 1)."""
    return figures.timed(cmd, cwd, env, ok_codes=(0, 1))[:2]


git = figures.git


def cell_sources(path):
    with open(path, encoding="utf-8") as handle:
        cells = json.load(handle)["cells"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]


def nbci_verdicts(out_dir, names):
    verdicts = {}
    for name in names:
        with open(os.path.join(out_dir, name, "result.json"), encoding="utf-8") as handle:
            result = json.load(handle)
        cell = result.get("failed_cell") or {}
        verdicts[name] = ("pass" if result["status"] == "succeeded" else result["status"],
                          cell.get("index"), cell.get("ename"))
    return verdicts


def nbmake_verdicts(junit, names):
    """From pytest's JUnit XML: pass or fail, the failing cell (nbmake's
    message opens with the failing cell's source, matched against the
    notebook) and the error name (the traceback's last line)."""
    verdicts = {name: ("missing", None, None) for name in names}
    for case in ET.parse(junit).iter("testcase"):
        name = os.path.basename(case.get("name") or "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is None:
            verdicts[name] = ("pass", None, None)
            continue
        text = ANSI.sub("", (failure.get("message") or "") + "\n" + (failure.text or ""))
        errors = ERROR_LINE.findall(text)
        index = None
        parts = text.split("-" * 75)
        if len(parts) > 1:
            shown = parts[1].strip("-\n ").strip()
            for i, source in enumerate(cell_sources(os.path.join(NOTEBOOKS, name))):
                if source.strip() and source.strip() == shown:
                    index = i
        verdicts[name] = ("failed", index, errors[-1] if errors else None)
    return verdicts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nbci", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sequential-rounds", type=int, default=1,
                        help="rounds of nbci check --jobs 1, the sequential baseline")
    args = parser.parse_args()
    nbci = os.path.abspath(args.nbci)
    python = sys.executable
    names = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))

    work = tempfile.mkdtemp(prefix="nbci-bench-nbmake-")
    repo = os.path.join(work, "repo")
    plain = os.path.join(work, "plain")
    os.makedirs(repo)
    for name in names:
        shutil.copy(os.path.join(NOTEBOOKS, name), repo)
    git(repo, "init", "--quiet")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "notebooks")
    shutil.copytree(NOTEBOOKS, plain)
    env = dict(os.environ, NBCI_PYTHON=python)
    out = os.path.join(work, "out")
    junit = os.path.join(work, "junit.xml")
    nbci_cmd = [nbci, "check", "--jobs", str(args.jobs), "--out-dir", out]
    nbmake_cmd = [python, "-m", "pytest", "--nbmake", "-n", str(args.jobs), "-q",
                  "-p", "no:cacheprovider", f"--junitxml={junit}", "."]

    print(f"nbci: {nbci}\npython: {python}\ncores: {os.cpu_count()}, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{len(names)} notebooks (tests/bench/notebooks), {args.jobs} at a time, {args.rounds} alternating rounds")
    # One warm-up each: cold file caches and matplotlib's font cache.
    timed(nbci_cmd, repo, env)
    timed(nbmake_cmd, plain, env)
    walls = {"nbci": [], "nbmake": []}
    cpus = {"nbci": [], "nbmake": []}
    for round_ in range(args.rounds):
        order = [("nbci", nbci_cmd, repo), ("nbmake", nbmake_cmd, plain)]
        if round_ % 2:
            order.reverse()
        for tool, cmd, cwd in order:
            wall, cpu = timed(cmd, cwd, env)
            walls[tool].append(wall)
            cpus[tool].append(cpu)
        print(f"  round {round_ + 1}: nbci {walls['nbci'][-1]:.2f} s, nbmake {walls['nbmake'][-1]:.2f} s"
              f"  (load {os.getloadavg()[0]:.2f})")
    sequential = [timed([nbci, "check", "--jobs", "1", "--out-dir", out + "-seq"], repo, env)
                  for _ in range(args.sequential_rounds)]
    seq_wall = statistics.median(w for w, _ in sequential)
    seq_cpu = statistics.median(c for _, c in sequential)
    print(f"  sequential: nbci check --jobs 1 median {seq_wall:.2f} s ({args.sequential_rounds} rounds)")
    n, m = statistics.median(walls["nbci"]), statistics.median(walls["nbmake"])
    print(f"  nbci check --jobs {args.jobs}       median {n:.2f} s  (min {min(walls['nbci']):.2f}, max {max(walls['nbci']):.2f})"
          f"  CPU {statistics.median(cpus['nbci']):.1f} s")
    print(f"  pytest --nbmake -n {args.jobs}      median {m:.2f} s  (min {min(walls['nbmake']):.2f}, max {max(walls['nbmake']):.2f})"
          f"  CPU {statistics.median(cpus['nbmake']):.1f} s")
    print(f"  ratio nbci/nbmake = {n / m:.3f}  (target <= 0.85, aim 0.70)")

    ours, theirs = nbci_verdicts(out, names), nbmake_verdicts(junit, names)
    width = max(len(n) for n in names)
    print(f"\n  {'NOTEBOOK':<{width}}  {'NBCI (status, cell, error)':<38}  {'NBMAKE':<38}  SAME")
    show = lambda v: f"{v[0]}" + ("" if v[0] == "pass" else f", cell {v[1]}, {v[2]}")
    same = 0
    agreed = {}
    for name in names:
        a, b = ours[name], theirs[name]
        agree = a[0] == ("pass" if b[0] == "pass" else "failed") and a[2] == b[2] and (b[1] is None or a[1] == b[1])
        same += agree
        agreed[name] = agree
        print(f"  {name:<{width}}  {show(a):<38}  {show(b):<38}  {'yes' if agree else 'NO'}")
    print(f"  verdicts identical on {same} of {len(names)}")
    nbci_cpu, nbmake_cpu = statistics.median(cpus["nbci"]), statistics.median(cpus["nbmake"])
    figures.write({
        "id": "check",
        "title": f"A repository's notebooks: nbci check --jobs {args.jobs} against pytest --nbmake -n {args.jobs}",
        "method": (
            f"The {len(names)} notebooks of `tests/bench/notebooks` (numpy, pandas, matplotlib and "
            "scikit-learn on bundled or generated data, no downloads; two fail on purpose) run "
            f"{args.jobs} at a time by `nbci check --jobs {args.jobs}` on a commit holding them and by "
            f"`pytest --nbmake -n {args.jobs}` (nbmake {nbmake_version()} on pytest-xdist) in a "
            "copy, both in the benchmark venv (same interpreter, packages and kernel), "
            f"{args.rounds} rounds after one unmeasured warm-up each, the order reversed every "
            "other round; medians. The sequential baseline is `nbci check --jobs 1` "
            f"({args.sequential_rounds} rounds). CPU time is that of every process each tool "
            "waited for. The verdicts are compared notebook by notebook: status, the failing "
            "cell (0-based index in the notebook as committed; nbmake's is found by matching the "
            "cell source its report shows) and the error's name."
        ),
        "tables": [
            {"caption": "wall and CPU time (medians)",
             "header": ["run", "wall", "CPU", "wall against nbmake"],
             "rows": [
                 [f"nbci check --jobs {args.jobs}", f"{n:.2f} s", f"{nbci_cpu:.1f} s", f"{n / m:.2f}x"],
                 [f"pytest --nbmake -n {args.jobs}", f"{m:.2f} s", f"{nbmake_cpu:.1f} s", "1.00x"],
                 ["nbci check --jobs 1 (sequential)", f"{seq_wall:.2f} s", f"{seq_cpu:.1f} s",
                  f"{seq_wall / m:.2f}x"],
                 [f"speed-up of --jobs {args.jobs} over --jobs 1", f"{seq_wall / n:.2f}x", "", ""],
             ]},
            {"caption": f"verdicts side by side (identical on {same} of {len(names)})",
             "header": ["notebook", "nbci", "nbmake", "same"],
             "rows": [[name, show(ours[name]), show(theirs[name]),
                       "yes" if agreed[name] else "NO"] for name in names]},
        ],
    })
    shutil.rmtree(work, ignore_errors=True)


def nbmake_version():
    from importlib.metadata import version
    return version("nbmake")


if __name__ == "__main__":
    main()
