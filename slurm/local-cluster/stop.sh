#!/usr/bin/env bash
# Stop the local Slurm cluster that start.sh started in DIR.
#
#   bash slurm/local-cluster/stop.sh [DIR] [--purge]
#
# DIR defaults to $SLURM_LOCAL_DIR, else /tmp/fer-dist-slurm. Jobs still known to that slurmctld
# are cancelled first (waiting up to 30 s for them to end), then every slurmd, slurmctld and munged
# of DIR is stopped: only the PIDs written in DIR/run, each checked to be a live process of the
# expected name (SIGTERM, SIGKILL after 15 s); never anything found by name. --purge then deletes
# DIR (only a folder that start.sh made). Safe when nothing runs; exit status 1 only when a daemon
# could not be stopped.
set -uo pipefail

me="local-cluster/stop.sh"
say() { echo "$me: $*" >&2; }
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

DIR=""; PURGE=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,11p' "$0" >&2; exit 0 ;;
    *) DIR="$a" ;;
  esac
done
DIR="${DIR:-${SLURM_LOCAL_DIR:-/tmp/fer-dist-slurm}}"
[ -d "$DIR" ] || { say "no folder $DIR: nothing to stop"; exit 0; }
DIR="$(cd "$DIR" && pwd -P)"
CONF="$DIR/slurm.conf"
RUN="$DIR/run"

. "$(dirname "${BASH_SOURCE[0]}")/pids.sh"
# exited PID: gone, or a zombie waiting to be reaped
exited() { [ ! -d "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

# 1. jobs first, so that their processes end through Slurm
if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null && [ -f "$CONF" ]; then
  jobs="$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    SLURM_CONF="$CONF" timeout 10 scancel $jobs 2>/dev/null || true
    left="$jobs"
    for _ in $(seq 60); do
      left="$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %A 2>/dev/null | tr -d '[:space:]')"
      [ -z "$left" ] && break
      sleep 0.5
    done
    [ -z "$left" ] || say "warning: jobs still listed after 30 s"
  fi
fi

# 2. daemons: the slurmd's and slurmctld together, then munged (the others talk through it)
rc=0
stop_group() {  # stop_group NAME:PIDFILE...
  local entry name file pid targets=""
  for entry in "$@"; do
    name="${entry%%:*}"; file="${entry#*:}"
    if pid="$(pid_of "$file" "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      targets="$targets $name:$pid:$file"
    elif [ -e "$file" ]; then
      rm -f "$file"   # stale: its process is gone
    fi
  done
  for _ in $(seq 150); do
    local busy=0
    for entry in $targets; do pid="${entry#*:}"; pid="${pid%%:*}"; exited "$pid" || busy=1; done
    [ "$busy" = 0 ] && break
    sleep 0.1
  done
  for entry in $targets; do
    name="${entry%%:*}"; pid="${entry#*:}"; file="${pid#*:}"; pid="${pid%%:*}"
    if ! exited "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
      say "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.3
    fi
    if exited "$pid"; then say "stopped $name (pid $pid)"; rm -f "$file"
    else say "error: $name (pid $pid) is still running"; rc=1; fi
  done
}
daemons=()
for f in "$RUN"/slurmd-*.pid; do [ -e "$f" ] && daemons+=("slurmd:$f"); done
stop_group "${daemons[@]}" "slurmctld:$RUN/slurmctld.pid"
stop_group "munged:$RUN/munged.pid"

# 3. optionally the folder itself
if [ "$PURGE" = 1 ] && [ "$rc" = 0 ]; then
  if [ -f "$DIR/.fer-dist-slurm" ]; then rm -rf "$DIR" && say "removed $DIR"
  else say "not removing $DIR: start.sh did not make it"; fi
fi
exit "$rc"
