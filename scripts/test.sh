#!/usr/bin/env bash
# Install everything and run the whole test suite. Extra arguments go to pytest.
# pytest exits 5 when it collected no test: that fails this script too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "tf,drive,colab,ssh,ray,test"
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest "$@"
