#!/usr/bin/env python3
"""Conformance runner: papermill 2.7 vs `nbci run` on a corpus of real test notebooks.

Run with the project's venv (stdlib only):

    .venv/bin/python tests/conformance/compare.py [--only SUBSTRING]... [--keep DIR] [--jobs N]

For every notebook under tests/conformance/notebooks/<project>/:

1. papermill: the notebook is copied to a fresh directory and run with
   `papermill IN OUT --cwd DIR --execution-timeout 60`. When that fails because
   the notebook names no kernel ("No kernel name found") or names one that is not
   installed (NoSuchKernel), it is run again with `-k python3` and the row says so.
   Verdict: exit code 0 = pass. The failing cell is the one papermill itself
   blames: the cell after its anchor marker (`papermill-error-cell-tag` with
   id="papermill-error-cell"), else the cell whose outputs hold an error, else
   the cell with metadata.papermill.exception true. Its position is mapped back to
   the notebook as committed (papermill drops committed error-marker cells and may
   add an `injected-parameters` cell; both are accounted for).
2. nbci: the notebook is copied to another fresh directory and run with
   `nbci run IN --timeout 120`; its exit code, result.json `status` (succeeded,
   failed, timed_out, error),
   `failed_cell.index` and `failed_cell.ename` are read.
3. The row is MATCH, EXPECTED-DIFF (one of nbci's intended differences from
   papermill, named) or MISMATCH. The script exits 1 when any row is a MISMATCH.

Intended differences (see README.md):
  raises-exception   an error in a cell tagged `raises-exception` is expected
  skip-execution     cells tagged `skip-execution` are not run (papermill 2.7 on the
                     installed nbclient 0.11 skips them as well, through nbclient's
                     `skip_cells_with_tag`, so this rarely shows as a difference)
  kernel-fallback    a kernelspec the notebook names that is not installed falls back
                     to python3 for Python notebooks
  no-kernelspec      a notebook without a kernelspec defaults to python3
  dead-kernel        a dead kernel is exit 4, status "error"

At most --jobs (default and maximum 2) notebooks run at a time.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NOTEBOOKS = HERE / "notebooks"
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_NBCI = REPO / "target" / "debug" / "nbci"

ERROR_MARKER_TAG = "papermill-error-cell-tag"
INJECTED_TAG = "injected-parameters"
RAISES_TAG = "raises-exception"
SKIP_TAG = "skip-execution"

PM_EXEC_TIMEOUT = 60  # papermill --execution-timeout (per cell)
NBCI_TIMEOUT = 120  # nbci run --timeout (whole notebook)
HARD_LIMIT = 600  # wall-clock guard per subprocess

NBCI_EXIT_STATUS = {0: "succeeded", 1: "failed", 3: "timed_out", 4: "error"}  # shared/src/outcome.rs


def tags(cell):
    t = cell.get("metadata", {}).get("tags", [])
    return t if isinstance(t, list) else []


def source(cell):
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def sysexit_ok(output):
    """papermill ignores SystemExit with no code or code 0."""
    return output.get("ename") == "SystemExit" and output.get("evalue") in ("", "0")


def error_outputs(cell):
    return [
        o
        for o in cell.get("outputs", []) or []
        if o.get("output_type") == "error" and not sysexit_ok(o)
    ]


def last_exception_name(text):
    """The exception class named on the last 'X: ...' line of a Python traceback."""
    name = None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Kernel))(?::|$)", line)
        if m:
            name = m.group(1)
    return name


def run(cmd, cwd, timeout=HARD_LIMIT):
    start = time.monotonic()
    try:
        p = subprocess.run(
            cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            timeout=timeout,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        return p.returncode, p.stdout, p.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, out, err + f"\n[compare.py: killed after {timeout}s]", time.monotonic() - start


# ---------------------------------------------------------------- papermill


def papermill_failure(input_nb, output_nb):
    """(committed index, ename, cell tags, first-non-raises-exception failure) from papermill's output."""
    in_cells = input_nb.get("cells", [])
    # papermill removes committed error markers before running
    in_keep = [i for i, c in enumerate(in_cells) if ERROR_MARKER_TAG not in tags(c)]
    out_cells = output_nb.get("cells", [])
    out_keep = [
        c for c in out_cells if ERROR_MARKER_TAG not in tags(c) and INJECTED_TAG not in tags(c)
    ]
    note = None
    if len(in_keep) != len(out_keep):
        note = f"cell count differs: committed {len(in_keep)} (without markers), output {len(out_keep)}"

    def committed_index(k):
        return in_keep[k] if k < len(in_keep) else None

    # positions (in out_keep) of the cells papermill blames
    blamed = None
    kept_pos = -1
    anchor_next = False
    for c in out_cells:
        if ERROR_MARKER_TAG in tags(c):
            if 'id="papermill-error-cell"' in source(c):
                anchor_next = True
            continue
        if INJECTED_TAG in tags(c):
            anchor_next = False
            continue
        kept_pos += 1
        if anchor_next:
            blamed = kept_pos
            break
    if blamed is None:
        for k, c in enumerate(out_keep):
            if error_outputs(c):
                blamed = k  # papermill keeps the last one; there is normally one
        if blamed is None:
            for k, c in enumerate(out_keep):
                if c.get("metadata", {}).get("papermill", {}).get("exception") is True:
                    blamed = k
                    break

    def describe(k):
        if k is None:
            return None
        c = out_keep[k]
        errs = error_outputs(c)
        ename = errs[0].get("ename") if errs else None
        if ename is None and c.get("metadata", {}).get("papermill", {}).get("exception") is True:
            ename = "CellExecutionError"
        return {"index": committed_index(k), "ename": ename, "tags": tags(c)}

    # the first failure papermill saw that is not in a raises-exception cell
    real = None
    for k, c in enumerate(out_keep):
        if RAISES_TAG in tags(c):
            continue
        if error_outputs(c) or c.get("metadata", {}).get("papermill", {}).get("exception") is True:
            real = k
            break
    return describe(blamed), describe(real), note


def run_papermill(src, workdir):
    d = workdir / "papermill"
    d.mkdir()
    nb_in = d / src.name
    shutil.copyfile(src, nb_in)
    out = d / (src.stem + ".pm-out.ipynb")
    base = [
        str(VENV_BIN / "papermill"),
        str(nb_in),
        str(out),
        "--cwd",
        str(d),
        "--execution-timeout",
        str(PM_EXEC_TIMEOUT),
        "--no-progress-bar",
    ]
    code, so, se, secs = run(base, d)
    rerun = None
    if code != 0 and ("NoSuchKernel" in se or "No kernel name found" in se):
        rerun = "no-kernelspec" if "No kernel name found" in se else "kernel-fallback"
        first_stderr = se
        if out.exists():
            out.unlink()
        code, so, se, secs2 = run(base + ["-k", "python3"], d)
        secs += secs2
        se = first_stderr + "\n--- rerun with -k python3 ---\n" + se
    (workdir / "papermill.stderr").write_text(se)
    res = {"exit": code, "rerun": rerun, "secs": secs, "stderr": se, "out": out}
    if code == 0:
        res["verdict"] = "pass"
        return res
    if code is None:
        res["verdict"] = "hang"
        return res
    tail = se.split("--- rerun with -k python3 ---")[-1]
    if "DeadKernelError" in tail or "Kernel died" in tail:
        res["verdict"] = "dead-kernel"
    elif "CellTimeoutError" in tail or "TimeoutError" in tail:
        res["verdict"] = "timeout"
    else:
        res["verdict"] = "fail"
    res["ename"] = last_exception_name(tail)
    if out.exists():
        try:
            blamed, real, note = papermill_failure(
                json.loads(src.read_text(encoding="utf-8")), json.loads(out.read_text(encoding="utf-8"))
            )
            res["blamed"], res["real"], res["map_note"] = blamed, real, note
            if blamed and blamed.get("ename"):
                res["ename"] = blamed["ename"]
        except (ValueError, OSError) as e:
            res["map_note"] = f"could not read output notebook: {e}"
    return res


# ---------------------------------------------------------------- nbci


def run_nbci(src, workdir, nbci):
    d = workdir / "nbci"
    d.mkdir()
    nb_in = d / src.name
    shutil.copyfile(src, nb_in)
    code, so, se, secs = run([str(nbci), "run", str(nb_in), "--timeout", str(NBCI_TIMEOUT)], d)
    (workdir / "nbci.stderr").write_text(se)
    (workdir / "nbci.stdout").write_text(so)
    res = {"exit": code, "secs": secs, "stderr": se, "stdout": so}
    result_path = d / (src.stem + ".result.json")
    if result_path.exists():
        try:
            r = json.loads(result_path.read_text(encoding="utf-8"))
            res["status"] = r.get("status")
            fc = r.get("failed_cell") or {}
            res["index"] = fc.get("index")
            res["ename"] = fc.get("ename")
        except ValueError as e:
            res["status"] = f"unreadable result.json: {e}"
    else:
        res["status"] = None
    return res


# ---------------------------------------------------------------- verdicts


def classify(pm, nb):
    """('MATCH' | 'EXPECTED-DIFF' | 'MISMATCH', reason)."""
    st, code = nb.get("status"), nb.get("exit")
    problems = []
    if code not in NBCI_EXIT_STATUS or NBCI_EXIT_STATUS[code] != st:
        problems.append(f"nbci exit {code} with status {st!r}")

    expected = []
    if pm.get("rerun"):
        expected.append(pm["rerun"])

    pv = pm["verdict"]
    blamed = pm.get("blamed") or {}
    real = pm.get("real")

    def same_failure(f):
        return (
            f is not None
            and st == "failed"
            and nb.get("index") == f.get("index")
            and nb.get("ename") == f.get("ename")
        )

    if pv == "pass":
        if st == "succeeded":
            verdict = True
        else:
            verdict = False
            problems.append(f"papermill passed, nbci {st}")
    elif pv == "fail":
        if RAISES_TAG in blamed.get("tags", []):
            # papermill blames a cell whose error nbci expects; nbci must agree on the rest
            expected.append(RAISES_TAG)
            if real is None:
                verdict = st == "succeeded"
                if not verdict:
                    problems.append(f"only raises-exception errors, but nbci {st}")
            else:
                verdict = same_failure(real)
                if not verdict:
                    problems.append(
                        f"first non-raises-exception failure is cell {real.get('index')} "
                        f"{real.get('ename')}, nbci {st} at {nb.get('index')} {nb.get('ename')}"
                    )
        elif SKIP_TAG in blamed.get("tags", []):
            expected.append(SKIP_TAG)
            verdict = st == "succeeded" or same_failure(real)
        elif pm.get("blamed"):
            verdict = same_failure(blamed)
            if not verdict:
                if st != "failed":
                    problems.append(f"papermill failed, nbci {st}")
                else:
                    problems.append(
                        f"papermill blames cell {blamed.get('index')} {blamed.get('ename')}, "
                        f"nbci cell {nb.get('index')} {nb.get('ename')}"
                    )
        else:
            # papermill failed without blaming a cell (it could not run the notebook)
            verdict = False
            problems.append(f"papermill failed before running a cell ({pm.get('ename')}), nbci {st}")
    elif pv == "dead-kernel":
        expected.append("dead-kernel")
        verdict = st == "error" and code == 4
        if not verdict:
            problems.append(f"papermill: dead kernel; nbci {st} exit {code}")
    elif pv == "timeout":
        verdict = st == "timed_out" or (st == "failed" and same_failure(blamed))
        if not verdict:
            problems.append(f"papermill timed out; nbci {st}")
    else:
        verdict = False
        problems.append(f"papermill {pv}")

    if verdict and not problems:
        if expected:
            return "EXPECTED-DIFF", ", ".join(dict.fromkeys(expected))
        return "MATCH", ""
    return "MISMATCH", "; ".join(problems)


def one(src, workroot, nbci):
    rel = src.relative_to(NOTEBOOKS)
    workdir = Path(tempfile.mkdtemp(prefix="nb-", dir=workroot))
    (workdir / "NOTEBOOK").write_text(str(rel) + "\n")
    pm = run_papermill(src, workdir)
    nb = run_nbci(src, workdir, nbci)
    row, why = classify(pm, nb)
    return {"rel": str(rel), "workdir": str(workdir), "pm": pm, "nbci": nb, "row": row, "why": why}


def fmt_pm(pm):
    v = pm["verdict"]
    b = pm.get("blamed") or {}
    idx = b.get("index") if v != "pass" else None
    ename = pm.get("ename") if v != "pass" else None
    s = f"{v}/{'-' if idx is None else idx}/{ename or '-'}"
    if pm.get("rerun"):
        s += " (-k python3)"
    return s


def fmt_nb(nb):
    idx = nb.get("index")
    return f"{nb.get('status')}/{'-' if idx is None else idx}/{nb.get('ename') or '-'} [exit {nb.get('exit')}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="run notebooks whose path contains this")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks at a time (at most 2)")
    ap.add_argument("--keep", metavar="DIR", help="keep the work directories (outputs, stderr) under DIR")
    ap.add_argument("--nbci", default=str(DEFAULT_NBCI), help="the nbci binary")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args()

    nbci = Path(args.nbci).resolve()
    if not nbci.exists():
        sys.exit(f"no nbci binary at {nbci}; build it with `cargo build -p nbci`")
    if not (VENV_BIN / "papermill").exists():
        sys.exit(f"no papermill at {VENV_BIN / 'papermill'}")

    notebooks = sorted(NOTEBOOKS.rglob("*.ipynb"))
    notebooks = [
        p
        for p in notebooks
        if not p.name.endswith((".out.ipynb", ".pm-out.ipynb"))
        and (not args.only or any(o in str(p.relative_to(NOTEBOOKS)) for o in args.only))
    ]
    if not notebooks:
        sys.exit("no notebooks selected")

    if args.keep:
        workroot = Path(args.keep).resolve()
        workroot.mkdir(parents=True, exist_ok=True)
        cleanup = False
    else:
        workroot = Path(tempfile.mkdtemp(prefix="nbci-conformance-"))
        cleanup = True

    jobs = max(1, min(2, args.jobs))
    rows = []
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, p, workroot, nbci): p for p in notebooks}
        for f in concurrent.futures.as_completed(futures):
            r = f.result()
            rows.append(r)
            print(f"  [{len(rows)}/{len(notebooks)}] {r['row']:<13} {r['rel']}", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r["rel"])

    w = max(len(r["rel"]) for r in rows)
    wp = max(len(fmt_pm(r["pm"])) for r in rows)
    wn = max(len(fmt_nb(r["nbci"])) for r in rows)
    header = f"{'notebook':<{w}}  {'papermill verdict/index/ename':<{wp}}  {'nbci status/index/ename':<{wn}}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        line = f"{r['rel']:<{w}}  {fmt_pm(r['pm']):<{wp}}  {fmt_nb(r['nbci']):<{wn}}  {r['row']}"
        if r["why"]:
            line += f" ({r['why']})"
        print(line)
    counts = {k: sum(1 for r in rows if r["row"] == k) for k in ("MATCH", "EXPECTED-DIFF", "MISMATCH")}
    print()
    print(
        f"{len(rows)} notebooks in {time.monotonic() - started:.0f}s: "
        f"{counts['MATCH']} MATCH, {counts['EXPECTED-DIFF']} EXPECTED-DIFF, {counts['MISMATCH']} MISMATCH"
    )
    for r in rows:
        if r["row"] == "MISMATCH":
            print(f"\nMISMATCH {r['rel']}: {r['why']}")
            if r["pm"].get("map_note"):
                print(f"  papermill mapping: {r['pm']['map_note']}")
            print(f"  work dir: {r['workdir']}" + ("" if args.keep else " (removed; use --keep DIR)"))
            tail = "\n".join(r["nbci"]["stderr"].strip().splitlines()[-8:])
            print("  nbci stderr (last lines):\n    " + tail.replace("\n", "\n    "))

    if args.json:
        slim = []
        for r in rows:
            pm = {k: v for k, v in r["pm"].items() if k not in ("stderr", "out")}
            nb = {k: v for k, v in r["nbci"].items() if k not in ("stderr", "stdout")}
            slim.append({"notebook": r["rel"], "row": r["row"], "why": r["why"], "papermill": pm, "nbci": nb})
        Path(args.json).write_text(json.dumps(slim, indent=2) + "\n")

    if cleanup:
        shutil.rmtree(workroot, ignore_errors=True)
    return 1 if counts["MISMATCH"] else 0


if __name__ == "__main__":
    sys.exit(main())
