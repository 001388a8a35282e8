#!/usr/bin/env bash
# Install Debian's Slurm (slurmctld, slurmd, client tools) and munge, for the local cluster of
# start.sh and for the Slurm tests. Does nothing when every binary is already there.
#
# Never fails `make test`: without root or apt-get it explains what is missing and exits 0 (the
# Slurm tests then skip with that reason). A failed apt-get is reported and exits 1.
set -uo pipefail

me="slurm/local-cluster/install.sh"
say() { echo "$me: $*" >&2; }

# The daemons live in sbin folders, which a CI or non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

BINARIES="munged munge unmunge slurmctld slurmd sbatch srun sinfo squeue scontrol scancel"
PACKAGES="slurmctld slurmd slurm-client munge"

missing=""
for b in $BINARIES; do command -v "$b" >/dev/null 2>&1 || missing="$missing $b"; done
if [ -z "$missing" ]; then
  say "Slurm and munge are installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "missing:$missing. Installing them needs root: sudo bash $0 (the Slurm tests skip meanwhile)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "missing:$missing and no apt-get here: install Slurm (slurmctld, slurmd, client) and munge" \
      "with your package manager (the Slurm tests skip meanwhile)"
  exit 0
fi

say "missing:$missing; apt-get install $PACKAGES"
# Package scripts would try to start system-wide daemons with /etc/slurm defaults; a policy-rc.d
# that answers 101 ("action forbidden") stops them. Only ours is removed afterwards.
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && ours=1
fi
started=$(date +%s)
# shellcheck disable=SC2086
{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $PACKAGES; } >&2
rc=$?
[ "$ours" = 1 ] && rm -f "$policy"
if [ "$rc" != 0 ]; then
  say "apt-get failed (exit $rc)"
  exit 1
fi
for b in $BINARIES; do
  command -v "$b" >/dev/null 2>&1 || { say "still missing after the install: $b"; exit 1; }
done
say "installed in $(( $(date +%s) - started ))s"
