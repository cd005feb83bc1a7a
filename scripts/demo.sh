#!/usr/bin/env bash
# The main job on the embedded defaults: a local agent (unix socket /run/dockyard/agent.sock, data root
# /var/lib/dockyard), then the story told through the `dockyard` CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
DOCKYARD="$BIN/dockyard"
LOG=/var/log/dockyard-agent.log
PIDFILE=/run/dockyard/agent.pid

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

mkdir -p /run/dockyard
if ! "$DOCKYARD" ping >/dev/null 2>&1; then
  echo "starting dockyard-agent (log: $LOG)"
  nohup "$BIN/dockyard-agent" >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    "$DOCKYARD" ping >/dev/null 2>&1 && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "agent failed to start:"; tail -20 "$LOG"; exit 1; }
    sleep 0.1
  done
fi

step dockyard version
"$DOCKYARD" version
step dockyard info
"$DOCKYARD" info
# >>> demo steps (images, containers)
# <<< demo steps

printf '\nThe agent keeps running (pid %s); stop it with: kill %s\n' "$(cat "$PIDFILE" 2>/dev/null || echo '?')" \
  "$(cat "$PIDFILE" 2>/dev/null || echo '<pid>')"
