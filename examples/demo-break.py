#!/usr/bin/env python3
"""Break the demo repo's training notebook the way a real commit might.

Usage: demo-break.py DEMO_REPO_DIR

Introduces a typo (`LogisticRegresion`) where the model is constructed in
notebooks/train.ipynb, so executing that cell raises NameError. The notebook
stays valid nbformat JSON. Standard library only.
"""
import json
import os
import sys

GOOD = "LogisticRegression("
BAD = "LogisticRegresion("


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} DEMO_REPO_DIR", file=sys.stderr)
        return 2
    path = os.path.join(argv[1], "notebooks", "train.ipynb")
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)

    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        text = "".join(src) if isinstance(src, list) else src
        if BAD in text:
            print(f"{path}: already broken")
            return 0
        if GOOD not in text:
            continue
        text = text.replace(GOOD, BAD, 1)
        cell["source"] = text.splitlines(keepends=True) if isinstance(src, list) else text
        cell["outputs"] = []
        cell["execution_count"] = None
        break
    else:
        print(f"{path}: no code cell contains {GOOD!r}", file=sys.stderr)
        return 1

    with open(path, "w", encoding="utf-8") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"broke {path}: {GOOD.rstrip('(')} -> {BAD.rstrip('(')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
