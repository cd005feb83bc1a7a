#!/bin/sh
# dockyard-supervise.sh: keeps the Dockyard agent running on hosts without systemd.
#
#   dockyard-supervise.sh start     start the supervisor (detached) unless it runs; waits for the agent pid
#   dockyard-supervise.sh stop      SIGTERM the agent (it drains) and the supervisor; waits for both
#   dockyard-supervise.sh restart   restart the agent only (upgrade); containers keep running under conmon
#   dockyard-supervise.sh reload    SIGHUP the agent: reload TLS certificates
#   dockyard-supervise.sh status    exit 0 and print the agent pid when it runs
#
# The supervisor restarts the agent when it dies, with a growing pause while it keeps crashing.
# Environment (defaults): DOCKYARD_AGENT (/opt/dockyard/venv/bin/dockyard-agent),
# DOCKYARD_CONFIG (/etc/dockyard/agent.toml), DOCKYARD_RUN (/run/dockyard),
# DOCKYARD_LOG (/var/lib/dockyard/agent.log).
set -u
# The data root and the log are root's alone (the agent sets this itself too); the run dir holds the
# agent's socket, which its group must reach, so it is made 0755 explicitly.
umask 077

AGENT=${DOCKYARD_AGENT:-/opt/dockyard/venv/bin/dockyard-agent}
CONFIG=${DOCKYARD_CONFIG:-/etc/dockyard/agent.toml}
RUN=${DOCKYARD_RUN:-/run/dockyard}
LOG=${DOCKYARD_LOG:-/var/lib/dockyard/agent.log}
SUP_PID=$RUN/supervisor.pid
AGENT_PID=$RUN/agent.pid

# A pid runs when it exists and is not a zombie (where PID 1 is not an init, the dead may linger unreaped).
running() {
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ "$state" != Z ]
}
alive() { [ -s "$1" ] && running "$(cat "$1")"; }

# Poll until "$@" succeeds or about $1 tenths of a second pass.
wait_for() {
    tries=$1; shift
    while [ "$tries" -gt 0 ]; do
        "$@" && return 0
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

supervise() {
    stopping=0
    restarting=0
    child=
    trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
    trap '[ -n "$child" ] && kill -HUP "$child" 2>/dev/null' HUP
    trap 'restarting=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' USR1
    echo $$ >"$SUP_PID"
    pause=1
    while [ "$stopping" = 0 ]; do
        started=$(date +%s)
        "$AGENT" --config "$CONFIG" </dev/null >>"$LOG" 2>&1 &
        child=$!
        echo "$child" >"$AGENT_PID.tmp" && mv "$AGENT_PID.tmp" "$AGENT_PID"
        # `wait` returns early when a trapped signal arrives: keep waiting while the agent lives.
        while :; do
            wait "$child"
            status=$?
            running "$child" || break
        done
        rm -f "$AGENT_PID"
        echo "dockyard-supervise: agent $child exited with status $status" >>"$LOG"
        [ "$stopping" = 1 ] && break
        if [ "$restarting" = 1 ]; then
            restarting=0
            pause=1
            continue
        fi
        # Crash loop protection: back off while the agent dies young, reset once it ran a while.
        if [ $(($(date +%s) - started)) -ge 30 ]; then pause=1; fi
        sleep "$pause"
        [ "$pause" -lt 30 ] && pause=$((pause * 2))
    done
    rm -f "$SUP_PID" "$AGENT_PID"
}

case "${1:-}" in
run)
    mkdir -p "$(dirname "$LOG")" && mkdir -p -m 0755 "$RUN"
    supervise
    ;;
start)
    if alive "$SUP_PID"; then
        echo "dockyard-supervise: already running (supervisor $(cat "$SUP_PID"))"
        exit 0
    fi
    mkdir -p "$(dirname "$LOG")" && mkdir -p -m 0755 "$RUN"
    rm -f "$AGENT_PID"
    setsid "$0" run </dev/null >/dev/null 2>&1 &
    if wait_for 100 alive "$AGENT_PID"; then
        echo "dockyard-supervise: started agent $(cat "$AGENT_PID")"
    else
        echo "dockyard-supervise: the agent did not start; see $LOG" >&2
        exit 1
    fi
    ;;
stop)
    alive "$SUP_PID" || { echo "dockyard-supervise: not running"; exit 0; }
    kill -TERM "$(cat "$SUP_PID")"
    sup=$(cat "$SUP_PID")
    if wait_for 300 eval "! running $sup"; then
        echo "dockyard-supervise: stopped"
    else
        echo "dockyard-supervise: still running after 30s" >&2
        exit 1
    fi
    ;;
restart)
    if ! alive "$SUP_PID"; then exec "$0" start; fi
    old=$(cat "$AGENT_PID" 2>/dev/null || echo none)
    kill -USR1 "$(cat "$SUP_PID")"
    if wait_for 300 eval "[ -s '$AGENT_PID' ] && [ \"\$(cat '$AGENT_PID')\" != '$old' ] && alive '$AGENT_PID'"; then
        echo "dockyard-supervise: restarted agent $(cat "$AGENT_PID")"
    else
        echo "dockyard-supervise: the agent did not come back; see $LOG" >&2
        exit 1
    fi
    ;;
reload)
    alive "$AGENT_PID" || { echo "dockyard-supervise: agent not running" >&2; exit 1; }
    kill -HUP "$(cat "$AGENT_PID")"
    ;;
status)
    if alive "$AGENT_PID"; then cat "$AGENT_PID"; exit 0; fi
    exit 3
    ;;
*)
    echo "usage: $0 start|stop|restart|reload|status" >&2
    exit 2
    ;;
esac
