#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install orch with the extras named in $1
# (e.g. "tf,test"). Installs missing system packages with apt-get when run as root.
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-tf}"

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [[ ",$extras," == *,ssh,* ]]; then
  # the SSH tests start their own sshd on 127.0.0.1 (no system service is started)
  [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
fi
if [[ ",$extras," == *,test,* ]]; then
  # the tests of `orch top` run it in a real terminal: tmux
  command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "orch setup: installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    # policy-rc.d answering 101 keeps the package from starting the system's sshd
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      trap 'rm -f "$policy"' EXIT
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need_apt[@]}" >/dev/null
  else
    echo "orch setup: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "orch setup: Python 3.11 or newer is required" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "orch setup: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
# pip's own output goes to .venv/setup.log; one line per step here, pip's last lines
# only when a step fails
log=.venv/setup.log
: >"$log"
step() {  # step "what it does" command...
  local what="$1" started=$SECONDS
  shift
  printf 'orch setup: %s ... ' "$what"
  if "$@" >>"$log" 2>&1; then
    echo "done ($((SECONDS - started)) s)"
  else
    echo "FAILED"
    echo "orch setup: the last lines of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}
step "updating pip" .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip
step "installing orch[$extras] (TensorFlow takes a minute the first time)" \
  .venv/bin/python -m pip install --disable-pip-version-check -e ".[$extras]"
