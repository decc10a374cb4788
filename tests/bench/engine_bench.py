"""Engine benchmarks for `make bench` (figures only; tests never assert speed).

1. Overhead: `nbci run` against bare `papermill` on the same trivial notebook,
   alternating the two so that machine noise hits both alike; median of N runs.
2. Parallelism: `nbci check --jobs 2` on a commit adding 8 notebooks that each
   sleep 1 s, against the same check run one after another (`--jobs 1`).
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "notebooks")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, cwd, ok_codes=(0,), cpu=None):
    """Wall seconds of `cmd`; appends its CPU seconds (it and every process it
    waited for: driver, kernel) to `cpu` when given."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.append(children_cpu() - cpu_before)
    if done.returncode not in ok_codes:
        raise SystemExit(f"{cmd} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def overhead(nbci, papermill, runs):
    work = tempfile.mkdtemp(prefix="nbci-bench-")
    shutil.copy(os.path.join(FIXTURES, "pass.ipynb"), work)
    nbci_times, papermill_times, nbci_cpu, papermill_cpu = [], [], [], []
    # One warm-up each: first runs pay for cold file caches.
    timed([nbci, "run", "pass.ipynb"], work)
    timed([papermill, "--no-progress-bar", "pass.ipynb", "pm.out.ipynb"], work)
    for _ in range(runs):
        nbci_times.append(timed([nbci, "run", "pass.ipynb"], work, cpu=nbci_cpu))
        papermill_times.append(
            timed([papermill, "--no-progress-bar", "pass.ipynb", "pm.out.ipynb"], work,
                  cpu=papermill_cpu)
        )
    shutil.rmtree(work, ignore_errors=True)
    n, p = statistics.median(nbci_times), statistics.median(papermill_times)
    print(f"overhead: trivial notebook, {runs} alternating runs each")
    print(f"  papermill   median {p:.3f} s  (min {min(papermill_times):.3f}, max {max(papermill_times):.3f})")
    print(f"  nbci run    median {n:.3f} s  (min {min(nbci_times):.3f}, max {max(nbci_times):.3f})")
    print(f"  ratio nbci/papermill = {n / p:.3f}  (overhead {100 * (n / p - 1):+.1f}%; aim <= +10%)")
    nc, pc = statistics.median(nbci_cpu), statistics.median(papermill_cpu)
    print(f"  CPU seconds (all processes), median: papermill {pc:.3f}, nbci {nc:.3f}, ratio {nc / pc:.3f}")


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x.invalid",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x.invalid")
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, stdout=subprocess.DEVNULL)


def parallel(nbci, notebooks, rounds):
    repo = tempfile.mkdtemp(prefix="nbci-bench-repo-")
    git(repo, "init", "--quiet")
    for i in range(notebooks):
        shutil.copy(os.path.join(FIXTURES, "slow_1s.ipynb"), os.path.join(repo, f"slow_{i}.ipynb"))
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "slow notebooks")
    sequential, two = [], []
    for _ in range(rounds):
        sequential.append(timed([nbci, "check", "--jobs", "1"], repo))
        two.append(timed([nbci, "check", "--jobs", "2"], repo))
    shutil.rmtree(repo, ignore_errors=True)
    s, t = statistics.median(sequential), statistics.median(two)
    print(f"parallel: nbci check on {notebooks} notebooks sleeping 1 s each, {rounds} rounds")
    print(f"  --jobs 1    median {s:.2f} s")
    print(f"  --jobs 2    median {t:.2f} s")
    print(f"  speed-up = {s / t:.2f}x  (aim >= 1.7x on 2 cores)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nbci", required=True)
    parser.add_argument("--papermill", required=True)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notebooks", type=int, default=8)
    args = parser.parse_args()
    nbci = os.path.abspath(args.nbci)
    args.papermill = os.path.abspath(args.papermill)
    print(f"nbci: {nbci}\ncores: {os.cpu_count()}\n")
    overhead(nbci, args.papermill, args.runs)
    print()
    parallel(nbci, args.notebooks, args.rounds)


if __name__ == "__main__":
    main()
