"""Engine benchmarks for `make bench` (figures only; tests never assert speed).

1. One notebook: `nbci run` against bare `papermill` and against
   `jupyter nbconvert --execute`, on a trivial notebook (tests/notebooks/
   pass.ipynb) and on a real one (tests/bench/notebooks: scikit-learn on the
   digits set), all three in the benchmark venv (same interpreter, packages
   and kernel), rounds alternating; medians of wall and CPU time.
2. Speed-up against jobs: `nbci check --jobs N` for N = 1..4 on a commit of 8
   notebooks that each sleep 1 s (what scheduling alone gains; the real
   notebooks, CPU-bound, are in nbmake_bench.py).

Figures go to stdout and to $NBCI_BENCH_OUT/engine.json (figures.py).

    .bench-venv/bin/python tests/bench/engine_bench.py --nbci target/release/nbci
"""

import argparse
import os
import shutil
import sys
import tempfile

import figures
from figures import alternate, median, ratio, seconds, timed

HERE = os.path.dirname(os.path.abspath(__file__))
TRIVIAL = os.path.join(HERE, "..", "notebooks", "pass.ipynb")
REAL = os.path.join(HERE, "notebooks", "10_sklearn_digits_svm.ipynb")
SLOW = os.path.join(HERE, "..", "notebooks", "slow_1s.ipynb")


def one_notebook(nbci, source, rounds, env):
    """{tool: (walls, cpus)} for one notebook run by the three tools."""
    work = tempfile.mkdtemp(prefix="nbci-bench-run-")
    name = os.path.basename(source)
    shutil.copy(source, work)
    bindir = os.path.dirname(sys.executable)
    papermill = [os.path.join(bindir, "papermill"), "--no-progress-bar", name, "pm.out.ipynb"]
    nbconvert = [os.path.join(bindir, "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                 name, "--output", "nbconvert.out.ipynb", "--log-level", "WARN"]
    ours = [nbci, "run", name, "--output", "nbci.out.ipynb", "--result", "nbci.result.json"]

    def thunk(cmd):
        return lambda: timed(cmd, work, env)[:2]

    samples = alternate([("nbci run", thunk(ours)), ("papermill", thunk(papermill)),
                         ("nbconvert --execute", thunk(nbconvert))], rounds)
    shutil.rmtree(work, ignore_errors=True)
    return samples


def speedup(nbci, notebooks, max_jobs, rounds, env):
    repo = tempfile.mkdtemp(prefix="nbci-bench-repo-")
    figures.git(repo, "init", "--quiet")
    for i in range(notebooks):
        shutil.copy(SLOW, os.path.join(repo, f"slow_{i}.ipynb"))
    figures.git(repo, "add", "-A")
    figures.git(repo, "commit", "--quiet", "-m", "slow notebooks")
    jobs = list(range(1, max_jobs + 1))
    tools = [(n, (lambda n=n: timed([nbci, "check", "--jobs", str(n), "--out-dir", "out"], repo, env)[:2]))
             for n in jobs]
    samples = alternate(tools, rounds)
    shutil.rmtree(repo, ignore_errors=True)
    return jobs, {n: median(samples[n][0]) for n in jobs}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nbci", required=True)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per notebook")
    parser.add_argument("--speedup-rounds", type=int, default=3)
    parser.add_argument("--notebooks", type=int, default=8)
    parser.add_argument("--max-jobs", type=int, default=4)
    args = parser.parse_args()
    nbci = os.path.abspath(args.nbci)
    env = dict(os.environ, NBCI_PYTHON=sys.executable)
    print(f"nbci: {nbci}\npython: {sys.executable}\ncores: {os.cpu_count()}, {figures.load_note()}\n")

    rows_wall, rows_cpu = [], []
    for label, source in (("trivial (pass.ipynb, 2 cells)", TRIVIAL),
                          ("real (scikit-learn SVM on digits, 7 cells)", REAL)):
        samples = one_notebook(nbci, source, args.rounds, env)
        wall = {tool: median(walls) for tool, (walls, _) in samples.items()}
        cpu = {tool: median(cpus) for tool, (_, cpus) in samples.items()}
        print(f"{label}, {args.rounds} alternating rounds, medians:")
        for tool in samples:
            print(f"  {tool:<22} wall {seconds(wall[tool]):>8}   CPU {seconds(cpu[tool]):>8}")
        print(f"  nbci/papermill {ratio(wall['nbci run'], wall['papermill'])}, "
              f"nbci/nbconvert {ratio(wall['nbci run'], wall['nbconvert --execute'])}\n")
        rows_wall.append([label, seconds(wall["nbci run"]), seconds(wall["papermill"]),
                          seconds(wall["nbconvert --execute"]),
                          ratio(wall["nbci run"], wall["papermill"]),
                          ratio(wall["nbci run"], wall["nbconvert --execute"])])
        rows_cpu.append([label, seconds(cpu["nbci run"]), seconds(cpu["papermill"]),
                         seconds(cpu["nbconvert --execute"]),
                         ratio(cpu["nbci run"], cpu["papermill"]),
                         ratio(cpu["nbci run"], cpu["nbconvert --execute"])])

    jobs, walls = speedup(nbci, args.notebooks, args.max_jobs, args.speedup_rounds, env)
    base = walls[1]
    print(f"nbci check on {args.notebooks} notebooks sleeping 1 s each, {args.speedup_rounds} rounds, medians:")
    for n in jobs:
        print(f"  --jobs {n}   {walls[n]:.2f} s   speed-up {base / walls[n]:.2f}x")

    header = ["notebook", "nbci run", "papermill", "nbconvert --execute", "nbci / papermill",
              "nbci / nbconvert"]
    figures.write({
        "id": "engine",
        "title": "One notebook: nbci run against papermill and jupyter nbconvert --execute",
        "method": (
            f"Each tool executes the same notebook in the same benchmark venv (one interpreter, "
            f"the same packages, the same `python3` kernel), {args.rounds} rounds after one "
            "unmeasured warm-up each, the order of the tools reversed every other round; the "
            "figures are medians. Wall time is the command's, from spawn to exit; CPU time is "
            "that of the command and every process it waited for (driver, kernel). A ratio "
            "below 1 means nbci is faster. `nbci run` writes the executed notebook and its "
            "result object, as papermill and nbconvert write theirs.\n\n"
            f"Speed-up against jobs: `nbci check --jobs N` on a commit of {args.notebooks} "
            "notebooks that each sleep 1 s, the check with `--jobs 1` as the baseline "
            f"({args.speedup_rounds} alternating rounds, medians): what running notebooks side "
            "by side gains when they do not compete for the CPU. The real, CPU-bound notebooks "
            "are in the next section."
        ),
        "tables": [
            {"caption": "wall time (median)", "header": header, "rows": rows_wall},
            {"caption": "CPU time, all processes (median)", "header": header, "rows": rows_cpu},
            {"caption": f"nbci check on {args.notebooks} notebooks sleeping 1 s",
             "header": ["--jobs", "wall (median)", "speed-up against --jobs 1"],
             "rows": [[str(n), seconds(walls[n]), f"{base / walls[n]:.2f}x"] for n in jobs]},
        ],
        "series": {
            "speed-up against jobs": {
                "x_label": "--jobs", "y_label": "speed-up against --jobs 1", "x": jobs,
                "lines": {f"nbci check, {args.notebooks} notebooks sleeping 1 s":
                          [base / walls[n] for n in jobs],
                          "ideal": [float(n) for n in jobs]},
            },
        },
    })


if __name__ == "__main__":
    main()
