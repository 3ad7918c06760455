#!/usr/bin/env bash
# CI's checks of the monitors the installed package gives podman once its drop-in is
# enabled (README: "Enable pymon for podman", "Warm monitors"). Each check starts and
# removes its own containers.
#   monitor-check.sh cold          no server: the monitor is pymon's cold path, and podman
#                                  handed it the drop-in's PYMON_SOCKET (conmon_env_vars)
#   monitor-check.sh warm PID      with pymon-server PID listening: a monitor forked by it.
#                                  A launch may still go cold (the server warming up, or
#                                  slower than the launcher's 2 ms on a loaded machine), so
#                                  up to 10 containers are tried.
set -euo pipefail
IMAGE=localhost/busybox
SOCKET=/run/pymon/server.sock
ENTRY=/usr/libexec/podman/pymon

monitor_of() { podman inspect --format '{{.State.ConmonPid}}' "$1"; }
parent_of() { awk '/^PPid:/ { print $2 }' "/proc/$1/status"; }

case "${1:-}" in
cold)
  name=pymon-ci-cold
  podman run -d --name "$name" "$IMAGE" sleep 60 >/dev/null
  trap 'podman rm -f -t 0 "$name" >/dev/null' EXIT
  pid=$(monitor_of "$name")
  # the C launcher execs `python3 -IS -c PROGRAM  # ENTRY` for a cold monitor
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "# $ENTRY" \
    || { echo "monitor $pid is not pymon's cold monitor: $(tr '\0' ' ' < "/proc/$pid/cmdline")" >&2; exit 1; }
  tr '\0' '\n' < "/proc/$pid/environ" | grep -qx "PYMON_SOCKET=$SOCKET" \
    || { echo "monitor $pid: no PYMON_SOCKET=$SOCKET in its environment" >&2; exit 1; }
  echo "cold monitor $pid, with PYMON_SOCKET=$SOCKET from the drop-in"
  ;;
warm)
  server=${2:?usage: monitor-check.sh warm SERVER_PID}
  for try in $(seq 1 10); do
    name=pymon-ci-warm-$try
    podman run -d --name "$name" "$IMAGE" sleep 60 >/dev/null
    pid=$(monitor_of "$name")
    parent=$(parent_of "$pid")
    podman rm -f -t 0 "$name" >/dev/null
    if [ "$parent" = "$server" ]; then
      echo "warm monitor $pid forked by pymon-server $server (container $try of up to 10)"
      exit 0
    fi
    kill -0 "$server" || { echo "pymon-server $server is gone" >&2; exit 1; }
    sleep 0.5
  done
  echo "10 containers, no monitor forked by pymon-server $server" >&2
  exit 1
  ;;
*)
  echo "usage: monitor-check.sh cold | warm SERVER_PID" >&2
  exit 2
  ;;
esac
