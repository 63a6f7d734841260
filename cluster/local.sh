#!/usr/bin/env bash
# A local Ray cluster on loopback, and job submission to it.
#
#   cluster/local.sh up                 # head on 127.0.0.1 (GCS :6379, dashboard :8265)
#   cluster/local.sh submit [ARGS...]   # ray job submit ... -- python jobs/compress_cremi.py ARGS
#   cluster/local.sh down               # stop this head (by the PIDs of its session, not `ray stop`)
#
# Ports: RAY_PORT (6379), RAY_DASHBOARD_PORT (8265); CPUs: RAY_NUM_CPUS (all).
# Ray 2.60 heads use token authentication (the token lives in ~/.ray/auth_token): clients on this
# machine need RAY_AUTH_MODE=token, which this script exports.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
export PATH="$PWD/$BIN:$PATH" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=token
PORT=${RAY_PORT:-6379}
DASH=${RAY_DASHBOARD_PORT:-8265}
TMP=${RAY_TEMP_DIR:-/tmp/streamcomp_ray}
PIDFILE=$TMP/head.pid

case "${1:-}" in
  up)
    mkdir -p "$TMP"
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "head already running (pid $(cat "$PIDFILE")), dashboard http://127.0.0.1:$DASH"; exit 0
    fi
    nohup ray start --head --block --port "$PORT" --node-ip-address 127.0.0.1 \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASH" --include-dashboard true \
      ${RAY_NUM_CPUS:+--num-cpus "$RAY_NUM_CPUS"} --temp-dir "$TMP" --disable-usage-stats \
      >"$TMP/head.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 120); do
      if curl -s -o /dev/null "http://127.0.0.1:$DASH/api/version"; then
        echo "Ray head up: RAY_ADDRESS=127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASH"; exit 0
      fi
      kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -20 "$TMP/head.log"; exit 1; }
      sleep 1
    done
    echo "head did not come up in 120 s; see $TMP/head.log"; exit 1
    ;;
  submit)
    shift
    exec ray job submit --address "http://127.0.0.1:$DASH" --working-dir . -- python jobs/compress_cremi.py "$@"
    ;;
  down)
    [[ -f $PIDFILE ]] || { echo "no head started by this script"; exit 0; }
    # The head's own processes: the `ray start` process and every process of its session (temp dir).
    pids=$(cat "$PIDFILE"; pgrep -f -- "$TMP/session_" || true)
    kill -TERM $pids 2>/dev/null || true
    sleep 5
    kill -KILL $pids 2>/dev/null || true
    rm -f "$PIDFILE"
    echo "Ray head stopped"
    ;;
  *)
    sed -n '2,10p' "$0"; exit 2
    ;;
esac
