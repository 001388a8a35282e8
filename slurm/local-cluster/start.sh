#!/usr/bin/env bash
# Start a throw-away Slurm cluster on this one machine: munged, slurmctld and N slurmd daemons
# (N "nodes" on one host, each with its own name and port), all as root, every file under DIR.
# No systemd, no cgroups, no accounting database; nothing under /etc is written (except by the
# package install of install.sh when Slurm is missing).
#
#   bash slurm/local-cluster/start.sh [--nodes N] [DIR]
#   eval "$(bash slurm/local-cluster/start.sh --nodes 2 /tmp/fer-slurm)"    # sets SLURM_CONF
#
# DIR (default $SLURM_LOCAL_DIR, else /tmp/fer-dist-slurm) holds slurm.conf, the munge key, state,
# spool, logs and pid files. munged refuses a socket below a folder that others cannot search, so
# DIR must not sit inside a 0700 folder (mktemp -d, pytest's tmp_path). On success the only line on
# stdout is `export SLURM_CONF=DIR/slurm.conf` (also written to DIR/env.sh): every client command
# (sbatch, srun, squeue, sinfo, scontrol, and fer-dist submit) needs it. Progress goes to stderr.
# Running it again while the cluster answers just prints the line; otherwise it stops what is left
# of an earlier start of DIR (by the PIDs in DIR/run) and starts afresh. Stop with stop.sh DIR.
#
# Knobs (environment):
#   SLURM_LOCAL_NODES        number of slurmd daemons (same as --nodes)                   [1]
#   SLURM_LOCAL_NODENAMES    comma-separated node names; each must resolve on this host, since
#                            jobs connect to the first one (torch rendezvous). Default: this
#                            host's name, then localhost, then other loopback names of /etc/hosts
#   SLURM_LOCAL_CTLD_PORT    slurmctld port                                               [6817]
#   SLURM_LOCAL_SLURMD_PORT  port of the first slurmd; node i uses this + i               [6818]
#   SLURM_LOCAL_PARTITION    name of the one partition                                    [debug]
#   SLURM_LOCAL_CPUS         CPUs each node advertises (default: what slurmd -C detects)
#   SLURM_LOCAL_CRED_EXPIRE  munge credential lifetime; also how long a requeued job waits
#                            before it may start again (Slurm's default is 120 s)         [10]
#   SLURM_LOCAL_TIMEOUT      seconds to wait for each daemon and for idle nodes           [60]
#   SLURM_LOCAL_NO_INSTALL=1 never call install.sh; fail when a binary is missing
set -euo pipefail

me="local-cluster/start.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { echo "$me: $*" >&2; }
die() { echo "$me: error: $*" >&2; exit 1; }
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

NODES="${SLURM_LOCAL_NODES:-1}"
DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) [ $# -ge 2 ] || die "--nodes needs a number"; NODES="$2"; shift 2 ;;
    --nodes=*) NODES="${1#--nodes=}"; shift ;;
    -h|--help) sed -n '2,33p' "$0" >&2; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) DIR="$1"; shift ;;
  esac
done
DIR="${DIR:-${SLURM_LOCAL_DIR:-/tmp/fer-dist-slurm}}"
case "$NODES" in ''|*[!0-9]*|0) die "--nodes must be a positive integer, got '$NODES'" ;; esac
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_LOCAL_SLURMD_PORT:-6818}"
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
CRED_EXPIRE="${SLURM_LOCAL_CRED_EXPIRE:-10}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-60}"

[ "$(id -u)" = 0 ] || die "run it as root: the daemons run as root (SlurmUser=root)"

# ------------------------------------------------------------------ binaries
need="munged munge unmunge slurmctld slurmd sbatch srun sinfo squeue scontrol scancel"
have_all() { for b in $need; do command -v "$b" >/dev/null 2>&1 || return 1; done; }
if ! have_all; then
  [ "${SLURM_LOCAL_NO_INSTALL:-0}" = 1 ] && die "Slurm or munge is missing (and SLURM_LOCAL_NO_INSTALL=1)"
  bash "$here/install.sh" || die "install.sh failed"
  have_all || die "Slurm or munge is still missing: see the messages of install.sh above"
fi

# ------------------------------------------------------------------ the folder
# DIR is made world-searchable and its sub-folders are wiped: only ever one that we made.
MARK=".fer-dist-slurm"
if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/$MARK" ]; then
  die "$DIR is not empty and was not made by start.sh: give a new or empty folder"
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd -P)"
echo "a local Slurm cluster made by slurm/local-cluster/start.sh; stop.sh stops it" > "$DIR/$MARK"
chmod 755 "$DIR"
p="$DIR"
while [ "$p" != / ]; do
  p="$(dirname "$p")"
  mode="$(stat -c %A "$p")"
  case "${mode:9:1}" in x|t) ;; *) die "$p is not searchable by others ($mode), so munged would refuse its socket: use a DIR elsewhere" ;; esac
done
CONF="$DIR/slurm.conf"
SOCK="$DIR/socket/munge.socket"
RUN="$DIR/run"
[ "${#SOCK}" -lt 100 ] || die "the munge socket path $SOCK is too long for a unix socket: use a shorter DIR"
ENV_LINE="export SLURM_CONF=$CONF"

# ------------------------------------------------------------------ processes by pid file
. "$(dirname "${BASH_SOURCE[0]}")/pids.sh"
# halt FILE NAME: SIGTERM the process of FILE, SIGKILL after 15 s
halt() {
  local pid
  if alive "$1" "$2"; then
    pid="$(tr -dc 0-9 < "$1")"
    say "stopping a leftover $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do alive "$1" "$2" || break; sleep 0.1; done
    alive "$1" "$2" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$1"
}
halt_all() {
  local f
  for f in "$RUN"/slurmd-*.pid; do [ -e "$f" ] && halt "$f" slurmd; done
  halt "$RUN/slurmctld.pid" slurmctld
  halt "$RUN/munged.pid" munged
}

# ------------------------------------------------------------------ node names
resolves() { getent hosts "$1" >/dev/null 2>&1; }
if [ -n "${SLURM_LOCAL_NODENAMES:-}" ]; then
  IFS=, read -r -a NAMES <<< "$SLURM_LOCAL_NODENAMES"
  [ "${#NAMES[@]}" = "$NODES" ] || die "SLURM_LOCAL_NODENAMES has ${#NAMES[@]} names for $NODES nodes"
else
  candidates="$(hostname -s 2>/dev/null || true) localhost $(awk '$1 ~ /^127\./ {for (i = 2; i <= NF; i++) print $i}' /etc/hosts 2>/dev/null | grep -v '^#' || true)"
  NAMES=()
  for n in $candidates; do
    case " ${NAMES[*]} " in *" $n "*) continue ;; esac
    [[ "$n" =~ ^[A-Za-z][A-Za-z0-9-]*$ ]] && resolves "$n" && NAMES+=("$n")
    [ "${#NAMES[@]}" = "$NODES" ] && break
  done
  [ "${#NAMES[@]}" = "$NODES" ] || die "found only ${#NAMES[@]} host names that resolve here (${NAMES[*]}) for" \
    "$NODES nodes: add names for 127.0.0.1 to /etc/hosts or set SLURM_LOCAL_NODENAMES"
fi
for n in "${NAMES[@]}"; do resolves "$n" || say "warning: node name $n does not resolve: jobs on it cannot rendezvous"; done
HEAD="${NAMES[0]}"

node_states() {  # one "name state" line per node
  SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null || true
}
all_idle() {
  local states; states="$(node_states)"
  [ "$(echo "$states" | grep -c -E ' (idle|mix|alloc|comp)$' || true)" = "$NODES" ]
}

# ------------------------------------------------------------------ already running?
running=1
alive "$RUN/munged.pid" munged && alive "$RUN/slurmctld.pid" slurmctld || running=0
for n in "${NAMES[@]}"; do alive "$RUN/slurmd-$n.pid" slurmd || running=0; done
if [ "$running" = 1 ] && [ -f "$CONF" ] && all_idle; then
  say "already running in $DIR (nodes: ${NAMES[*]})"
  echo "$ENV_LINE" | tee "$DIR/env.sh"
  exit 0
fi
halt_all

if command -v ss >/dev/null 2>&1; then
  for port in "$CTLD_PORT" $(seq "$SLURMD_PORT" $((SLURMD_PORT + NODES - 1))); do
    ! ss -Hltn "sport = :$port" 2>/dev/null | grep -q . \
      || die "TCP port $port is in use (another Slurm?): see SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT"
  done
fi

# ------------------------------------------------------------------ fresh state
rm -rf "$DIR/state" "$DIR/spool" "$DIR/socket" "$RUN"
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge" "$DIR/socket" "$RUN"
chmod 700 "$DIR/state" "$DIR/munge"              # munge key and seed: root only
chmod 755 "$DIR/spool" "$DIR/log" "$DIR/socket" "$RUN"

failed() {
  say "error: $*"
  for f in "$DIR"/log/*.log; do
    [ -s "$f" ] && { echo "----- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  halt_all
  exit 1
}
wait_until() {  # wait_until WHAT COMMAND...: retry every 0.2 s for TIMEOUT seconds
  local what="$1" t0; shift
  t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    [ $(( $(date +%s) - t0 )) -lt "$TIMEOUT" ] || failed "$what not ready after ${TIMEOUT}s"
    sleep 0.2
  done
}

# ------------------------------------------------------------------ munge
KEY="$DIR/munge/munge.key"
[ -s "$KEY" ] || dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
chmod 400 "$KEY"
: > "$DIR/log/munged.log"
munged --socket="$SOCK" --key-file="$KEY" --pid-file="$RUN/munged.pid" --origin=127.0.0.1 \
       --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" || failed "munged did not start"
wait_until "munge" sh -c "echo probe | munge -S '$SOCK' | unmunge -S '$SOCK'"

# ------------------------------------------------------------------ slurm.conf
# slurmd -C prints what slurmd will detect; a node that advertises more memory than that is drained.
hw="$(slurmd -C 2>/dev/null | head -1 || true)"
hw_field() { echo "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }
MEM="$(hw_field RealMemory)"; CPUS="$(hw_field CPUs)"
[ -n "$MEM" ] || MEM=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
[ -n "$CPUS" ] || CPUS="$(nproc)"
overrides=""
if [ -n "${SLURM_LOCAL_CPUS:-}" ]; then CPUS="$SLURM_LOCAL_CPUS"; overrides="SlurmdParameters=config_overrides"; fi

{
  cat <<EOF
# written by slurm/local-cluster/start.sh: $NODES node(s) on this host
ClusterName=fer-dist-local
SlurmctldHost=$HEAD(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
# several slurmd on one host: %n is the node name
SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmdLogFile=$DIR/log/slurmd-%n.log
# no cgroups here: track processes through /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no accounting database: sacct is unavailable (fer-dist follows jobs with squeue)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# a cancelled or timed-out job gets SIGKILL 5 s after SIGTERM (default 30 s)
KillWait=5
# finished jobs stay visible to squeue/scontrol for 5 minutes
MinJobAge=300
Waittime=0
$overrides
EOF
  i=0
  for n in "${NAMES[@]}"; do
    echo "NodeName=$n NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + i)) CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
    i=$((i + 1))
  done
  nodelist="$(IFS=,; echo "${NAMES[*]}")"
  echo "PartitionName=$PARTITION Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP"
} > "$CONF"
chmod 644 "$CONF"

# ------------------------------------------------------------------ slurmctld, slurmd
: > "$DIR/log/slurmctld.log"
slurmctld -f "$CONF" || failed "slurmctld did not start"
for n in "${NAMES[@]}"; do
  mkdir -p "$DIR/spool/$n"
  slurmd -f "$CONF" -N "$n" || failed "slurmd $n did not start"
done
t0=$(date +%s)
until all_idle; do
  if [ $(( $(date +%s) - t0 )) -ge 3 ]; then  # the daemons write their pid files after forking
    alive "$RUN/slurmctld.pid" slurmctld || failed "slurmctld is not running"
    for n in "${NAMES[@]}"; do alive "$RUN/slurmd-$n.pid" slurmd || failed "slurmd $n is not running"; done
  fi
  [ $(( $(date +%s) - t0 )) -lt "$TIMEOUT" ] || failed "nodes not idle after ${TIMEOUT}s: $(node_states | tr '\n' ' ')"
  sleep 0.3
done
say "$NODES node(s) idle after $(( $(date +%s) - t0 ))s: ${NAMES[*]} (partition $PARTITION, $CPUS CPUs each)"
echo "$ENV_LINE" | tee "$DIR/env.sh"
