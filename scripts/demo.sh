#!/usr/bin/env bash
# The orch demo, the hybrid story with no Google account: install orch with TensorFlow
# and its sandbox, start the sandbox (a local Drive server; "Colab" runtimes that are
# orch's real notebook executed on local Jupyter kernels), make a demo project
# (default ./orch-demo) with one local slot and up to two Colab sessions, queue
# image, text and time-series jobs with no --on (placement keeps one here and sends
# two to "Colab"), submit a fourth while they train (its model lands as mymodel.h5
# in the project's root), watch them side by side, verify the models, and say where
# each trained and landed. Stops the sandbox and the daemon at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
bash scripts/setup.sh tf,sandbox
export PATH="$repo/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL=2

demo="${1:-orch-demo}"
mkdir -p "$(dirname "$demo")"
demo="$(cd "$(dirname "$demo")" && pwd)/$(basename "$demo")"
# the demo's own sandbox, beside the project (yours, if any, is left alone)
export ORCH_SANDBOX_DIR="$demo.sandbox"
if [ -d "$demo/.orch" ]; then (cd "$demo" && orch daemon stop >/dev/null 2>&1 || true); fi
orch sandbox down >/dev/null 2>&1 || true
rm -rf "$demo" "$ORCH_SANDBOX_DIR"
mkdir -p "$demo/jobs"
cp jobs/*.py "$demo/jobs/"
cat > "$demo/orch.toml" <<'TOML'
# orch settings for the demo: one local slot; `orch sandbox use` below adds the
# (sandbox) Drive hub and lets the daemon launch up to two Colab sessions itself.
local_slots = 1
gpus = "none"
daemon_idle_timeout = "2m"
TOML

cleanup() {
  (cd "$demo" && orch daemon stop >/dev/null 2>&1 || true)
  orch sandbox down >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo
echo "== starting the sandbox (no Google account)"
orch sandbox up
cd "$demo"
orch sandbox use --colab-workers 2 --colab-startup 15s

echo
echo "== queueing three training jobs with no --on: placement picks local or Colab"
digits=$(orch submit jobs/image_classification.py --name digits --estimate 40s -- --epochs 6)
sentiment=$(orch submit jobs/text_classification.py --name sentiment --estimate 40s \
  -- --epochs 6)
forecast=$(orch submit jobs/time_series.py --name forecast --estimate 40s -- --epochs 8)

echo
echo "== a fourth job while they train: a tabular regression, saved as mymodel.h5 here"
for _ in $(seq 240); do  # until one of them trains (at most 2 minutes)
  orch status --json | python -c 'import json, sys
sys.exit(not any(j["state"] == "RUNNING" for j in json.load(sys.stdin)["jobs"]))' && break
  sleep 0.5
done
houses=$(orch submit jobs/regression.py --name houses --estimate 20s \
  --output mymodel.h5:. -- --epochs 15 --save-as mymodel.h5)

echo
echo "== watching them (orch top)"
orch top --until-done
echo
orch status
echo
echo "== verifying the models (load with TensorFlow, predict once)"
orch pull --verify "$digits" "$sentiment" "$forecast" "$houses"

echo
echo "== learning curves: the two classifiers side by side (orch compare)"
orch compare "$digits" "$sentiment" --metric val_accuracy
echo "  (every run's TensorBoard logs are in models/NAME/logs: orch tensorboard serves them)"

echo
echo "== where each model trained and landed"
summary=$(cat <<'PY'
import json, sys
jobs = json.load(sys.stdin)["jobs"]
for j in jobs:
    worker = j["worker"] or "-"
    where = ("this machine (the local slot)" if worker.startswith("local") else
             f"a stand-in Colab session (worker {worker})")
    print(f"  {j['name']:<10} {j['state']:<7} trained on {where}")
    landed = sorted(j["pulled_to"], key=lambda p: p.split("/")[-1] == "logs")  # curves last
    print(f"  {'':<18} landed in {', '.join(landed) or '-'}")
# the story holds only if every model came back and both places trained some
places = {(j["worker"] or "").split("-")[0] for j in jobs if j["state"] == "PULLED"}
if len(jobs) != 4 or any(j["state"] != "PULLED" for j in jobs) or \
        not {"local", "colab"} <= places:
    sys.exit("demo: expected 4 models back, trained both here and on the stand-in "
             f"Colab; trained on: {', '.join(sorted(places)) or 'nothing'}")
PY
)
orch status --json | python -c "$summary"
ls -l mymodel.h5

echo
echo "== what was real and what was a stand-in"
echo "  real: orch (CLI, daemon, placement, workers), TensorFlow training, the Drive API"
echo "        client (googleapiclient), orch's generated Colab notebook, run cell by cell"
echo "  stand-in: Google Drive (orch's local Drive v3 server, files in memory);"
echo "            Colab (each session is a local Jupyter kernel with a stand-in google.colab,"
echo "            launched through a stand-in of Google's colab CLI; no GPU is added)"
echo "  the sandbox and the daemon are stopped now; try it yourself: orch sandbox up"
echo "  (README: \"Try the remote path without Google\")"
