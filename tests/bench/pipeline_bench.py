"""The CD pipeline against its steps run by hand, for `make bench`.

`nbci pipeline run` on the demo repository (examples/demo-repo: prepare ->
train -> evaluate, then the metric gate and a deployment to the local
registry) against the sum of the same three notebooks run one after another
by bare papermill with the same parameters (`run_id`, `artifacts_dir` and
each step's own), which is what a laptop script does. Both in the benchmark
venv, rounds alternating, medians. Figures go to stdout and to
$NBCI_BENCH_OUT/pipeline.json.

    .bench-venv/bin/python tests/bench/pipeline_bench.py --nbci target/release/nbci
"""

import argparse
import os
import shutil
import sys
import tempfile

import figures
from figures import alternate, median, ratio, seconds, timed

DEMO = os.path.join(figures.ROOT, "examples", "demo-repo")
# The steps of the demo pipeline and their own parameters (nbci.yaml).
STEPS = [("prepare", {"rows": "150"}), ("train", {}), ("evaluate", {})]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nbci", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nbci = os.path.abspath(args.nbci)
    env = dict(os.environ, NBCI_PYTHON=sys.executable)
    papermill = os.path.join(os.path.dirname(sys.executable), "papermill")
    print(f"nbci: {nbci}\npython: {sys.executable}\ncores: {os.cpu_count()}, {figures.load_note()}")

    work = tempfile.mkdtemp(prefix="nbci-bench-pipeline-")
    repo = os.path.join(work, "repo")
    shutil.copytree(DEMO, repo)
    figures.git(repo, "init", "--quiet")
    figures.git(repo, "add", "-A")
    figures.git(repo, "commit", "--quiet", "-m", "demo pipeline")
    counter = iter(range(1_000_000))

    def pipeline():
        # A data directory of its own each time: a fresh bucket, no run to resume.
        data = os.path.join(work, f"nbci-data-{next(counter)}")
        return timed([nbci, "pipeline", "run", "--repo", repo, "--data-dir", data], repo, env)[:2]

    def by_hand():
        run = f"by-hand-{next(counter)}"
        artifacts = os.path.join(work, run)
        os.makedirs(artifacts)
        wall = cpu = 0.0
        for step, parameters in STEPS:
            cmd = [papermill, "--no-progress-bar", f"{step}.ipynb", os.path.join(artifacts, f"{step}.out.ipynb"),
                   "-p", "run_id", run, "-p", "artifacts_dir", artifacts]
            for name, value in parameters.items():
                cmd += ["-p", name, value]
            step_wall, step_cpu, _ = timed(cmd, os.path.join(repo, "notebooks"), env)
            wall, cpu = wall + step_wall, cpu + step_cpu
        return wall, cpu

    samples = alternate([("nbci pipeline run", pipeline), ("papermill, step by step", by_hand)],
                        args.rounds)
    shutil.rmtree(work, ignore_errors=True)
    wall = {tool: median(walls) for tool, (walls, _) in samples.items()}
    ours, theirs = "nbci pipeline run", "papermill, step by step"
    for tool in samples:
        print(f"  {tool:<26} wall {seconds(wall[tool]):>8}")
    print(f"  ratio {ratio(wall[ours], wall[theirs])} (aim <= 1.10x)")
    figures.write({
        "id": "pipeline",
        "title": "A three-step pipeline against its steps run with bare papermill",
        "method": (
            "`nbci pipeline run` on the demo repository's pipeline (prepare -> train -> "
            "evaluate on a committed repository, each step an executed notebook and its "
            "HTML rendering kept under the run, then the metric gate and a deployment to the "
            "local model registry, every transition a conditional write in the directory "
            "bucket) against the three notebooks run one after another by bare papermill with "
            "the same parameters, the sum of their wall times. Both in the benchmark venv, "
            f"{args.rounds} rounds after one unmeasured warm-up each, the order reversed every "
            "other round; medians. A ratio below 1 means the pipeline is faster than the bare "
            "steps. Wall time only: `nbci pipeline run`'s notebook driver ends after the "
            "command (at the end of its input), so the command's CPU time would leave out "
            "its kernels'."
        ),
        "tables": [{
            "caption": "prepare -> train -> evaluate (medians)",
            "header": ["run", "wall", "wall against papermill"],
            "rows": [[ours, seconds(wall[ours]), ratio(wall[ours], wall[theirs])],
                     [theirs, seconds(wall[theirs]), "1.00x"]],
        }],
    })


if __name__ == "__main__":
    main()
