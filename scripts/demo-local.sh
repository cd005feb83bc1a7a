#!/usr/bin/env bash
# `make demo-local`: the main job on one machine, on the embedded defaults: a local agent (unix socket
# /run/dockyard/agent.sock, data root /var/lib/dockyard), then the story told through the `dockyard` CLI.
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

# An image made of the host's busybox-static: one binary plus its applet links, imported like `docker import`.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$WORK/rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$WORK/rootfs/etc/passwd"
echo "root:x:0:" >"$WORK/rootfs/etc/group"
tar -C "$WORK/rootfs" -cf "$WORK/busybox.tar" .

# A re-run starts from a clean slate: the previous demo container and image go first.
"$DOCKYARD" rm -f hello >/dev/null 2>&1 || true
"$DOCKYARD" rmi busybox:demo >/dev/null 2>&1 || true
step dockyard import busybox.tar busybox:demo
"$DOCKYARD" import -c 'CMD ["/bin/sh"]' "$WORK/busybox.tar" busybox:demo
step dockyard images
"$DOCKYARD" images
GREETING='echo "Hello from Dockyard: PID $$ in container $(hostname)"'
step "dockyard run --name hello busybox:demo sh -c '$GREETING'"
"$DOCKYARD" run --name hello busybox:demo sh -c "$GREETING"
step dockyard ps -a
"$DOCKYARD" ps -a
step dockyard logs hello
"$DOCKYARD" logs hello

printf '\nThe agent keeps running (pid %s); stop it with: kill %s\n' "$(cat "$PIDFILE" 2>/dev/null || echo '?')" \
  "$(cat "$PIDFILE" 2>/dev/null || echo '<pid>')"
