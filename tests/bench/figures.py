"""What the Python benchmarks of `make bench` share: timing child processes,
throwaway git repositories, and the figures file each benchmark leaves for
the report (`cargo bench -p nbci-tests --bench report` turns every
`$NBCI_BENCH_OUT/*.json` into BENCHMARKS.md and its plots).

A figures file, the same for the Rust benchmarks:

    {"id": "engine", "title": "...", "method": "markdown",
     "tables": [{"caption": "...", "header": [...], "rows": [[str, ...], ...]}],
     "latencies_ms": {"series": [float, ...]},                      (optional)
     "series": {"plot title": {"x_label": "...", "y_label": "...",  (optional)
                               "x": [...], "lines": {"name": [...]}}}}
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def out_dir():
    """Where figures files go: `NBCI_BENCH_OUT`, else target/bench."""
    path = os.environ.get("NBCI_BENCH_OUT") or os.path.join(ROOT, "target", "bench")
    os.makedirs(path, exist_ok=True)
    return path


def write(figures):
    """Writes one benchmark's figures as `<id>.json` (whole or not at all)."""
    path = os.path.join(out_dir(), f"{figures['id']}.json")
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(figures, handle, indent=1)
    os.replace(partial, path)
    print(f"figures: {path}")


def children_cpu():
    """CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, cwd, env=None, ok_codes=(0,)):
    """Runs `cmd`; returns its wall seconds, the CPU seconds of it and of
    everything it waited for (driver, kernel), and its exit code."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    if done.returncode not in ok_codes:
        sys.exit(f"{cmd} exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}")
    return wall, children_cpu() - cpu_before, done.returncode


def git(repo, *args):
    """`git` in `repo` with a fixed identity (benchmarks commit fixtures)."""
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, stdout=subprocess.DEVNULL)


def alternate(tools, rounds, warm_up=True):
    """Runs each `(name, thunk)` of `tools` once per round, the order
    reversed every other round, so that machine noise hits all alike; a thunk
    returns (wall, cpu). One unmeasured warm-up each first (cold file caches,
    matplotlib's font cache). Returns {name: (walls, cpus)}."""
    if warm_up:
        for _, thunk in tools:
            thunk()
    samples = {name: ([], []) for name, _ in tools}
    for round_ in range(rounds):
        order = tools if round_ % 2 == 0 else list(reversed(tools))
        for name, thunk in order:
            wall, cpu = thunk()
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    return samples


def median(values):
    return statistics.median(values)


def seconds(value):
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x"


def load_note():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
