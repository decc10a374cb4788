#!/usr/bin/env bash
# The demo behind `make demo`: a throwaway git repository holding the demo
# pipeline, with two commits: the first adds three working notebooks, the
# second breaks train.ipynb. `nbci check` runs on each: one green, one red;
# after the first, the CD pipeline runs and deploys the model to the local
# registry.
set -euo pipefail
NBCI=${1:-target/debug/nbci}
NBCI=$(cd "$(dirname "$NBCI")" && pwd)/$(basename "$NBCI")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nbci-demo.XXXXXX")
REPO=$WORK/demo-repo

cp -R "$HERE/demo-repo" "$REPO"
cd "$REPO"
git init --quiet --initial-branch=main
git config user.name "nbci demo"
git config user.email "demo@nbci.invalid"
git add -A
git commit --quiet -m "Add the iris pipeline: prepare, train, evaluate"

banner() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

banner "Commit 1: three new notebooks (expected: green)"
"$NBCI" check --repo "$REPO" --junit "$WORK/commit1.junit.xml" --summary "$WORK/commit1.md"

banner "Commit 1: the pipeline prepare -> train -> evaluate -> gate -> deploy (expected: deployed)"
"$NBCI" pipeline run --repo "$REPO"
"$NBCI" pipeline status --repo "$REPO" | head -1

python3 "$HERE/demo-break.py" "$REPO" >/dev/null
git commit --quiet -am "Tune the model (introduces a typo)"

banner "Commit 2: train.ipynb changed and broken (expected: red)"
status=0
"$NBCI" check --repo "$REPO" --junit "$WORK/commit2.junit.xml" --summary "$WORK/commit2.md" || status=$?

banner "Result"
if [ "$status" -eq 1 ]; then
  echo "The broken commit was caught: nbci check exited 1 (a notebook failed)."
else
  echo "Unexpected: nbci check exited $status on the broken commit." >&2
  exit 1
fi
echo "Demo repository:   $REPO"
echo "Reports:           $WORK/commit1.md, $WORK/commit2.md (and .junit.xml)"
echo "Executed notebooks: $REPO/.git/nbci/check/<commit>/"
echo "Pipeline runs:     $REPO/.git/nbci/pipelines/objects/pipelines/ (nbci pipeline status --repo $REPO)"
echo "Deployed model:    $REPO/.git/nbci/pipelines/registry/demo_model/CURRENT"
