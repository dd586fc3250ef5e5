#!/usr/bin/env bash
# The orch demo, no Google account needed: install orch with TensorFlow, make a
# demo project (default ./orch-demo), queue the three example jobs (images, text,
# time series) on the local CPU/GPU, watch them train side by side, and end with
# three verified models in orch-demo/models/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
bash scripts/setup.sh tf
export PATH="$repo/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL=2

demo="${1:-orch-demo}"
if [ -d "$demo/.orch" ]; then (cd "$demo" && orch daemon stop >/dev/null 2>&1 || true); fi
rm -rf "$demo"
mkdir -p "$demo/jobs"
cp jobs/*.py "$demo/jobs/"
cat > "$demo/orch.toml" <<'TOML'
# orch settings for the demo: three local slots so the jobs train side by side.
local_slots = 3
daemon_idle_timeout = "2m"
TOML
cd "$demo"
echo
echo "== queueing three training jobs in $(pwd)"
digits=$(orch submit jobs/image_classification.py --name digits)
sentiment=$(orch submit jobs/text_classification.py --name sentiment)
forecast=$(orch submit jobs/time_series.py --name forecast)
echo
echo "== watching them (orch top)"
orch top --until-done
echo
orch status
echo
echo "== verifying the models (load with TensorFlow, predict once)"
orch pull --verify "$digits" "$sentiment" "$forecast"
echo
echo "== the models, pulled into $(pwd)/models:"
find models -maxdepth 2 | sort
