#!/usr/bin/env bash
# scripts/slurm-local.sh: a throw-away one-node Slurm cluster on this machine, for runner's
# Slurm tests (tests/e2e_slurm.rs), CI (.ci/run) and trying `runner sweep --executor slurm`
# without a cluster. Debian's Slurm 22.05 and MUNGE; no systemd, no cgroups: munged, slurmctld
# and slurmd run in the background and are stopped by PID. Needs root.
#
#   scripts/slurm-local.sh install   apt-get install slurm-wlm munge (Debian; ~15 s)
#   scripts/slurm-local.sh start     write slurm.conf, start the daemons, wait for the node (~2 s)
#   scripts/slurm-local.sh stop      cancel every job, stop the daemons
#   scripts/slurm-local.sh status    daemons, sinfo, squeue
#   scripts/slurm-local.sh env       the line to eval: export SLURM_CONF=...
#   scripts/slurm-local.sh check     a 2-task job array, end to end (~3 s)
#
# After `start`: eval "$(scripts/slurm-local.sh env)" before sbatch / squeue / runner.
# Knobs: RUNNER_SLURM_DIR (default /tmp/runner-slurm: config, state, logs), RUNNER_SLURM_CPUS
# (CPUs the node declares; default: this machine's), RUNNER_SLURM_PORT (slurmctld's port,
# default 6817; slurmd uses the next one).
# Limits of this cluster: no accounting daemon (no sacct: use squeue / scontrol show job);
# `sbatch --wait` returns 0 for a job cancelled while pending; `--requeue` alone does not
# requeue a job that exits non-zero (`scontrol requeue` does).
set -euo pipefail

BASE=${RUNNER_SLURM_DIR:-/tmp/runner-slurm}
NODE=$(hostname -s)
CPUS=${RUNNER_SLURM_CPUS:-$(nproc)}
CTLD_PORT=${RUNNER_SLURM_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
export SLURM_CONF=$BASE/slurm.conf
MUNGE_DIR=$BASE/munge
MUNGE_SOCK=$MUNGE_DIR/run/munge.socket.2
CTLD_PID=$BASE/run/slurmctld.pid
SLURMD_PID=$BASE/run/slurmd.pid
MUNGED_PID=$MUNGE_DIR/run/munged.pid

log() { echo "[slurm-local $(date +%T)] $*" >&2; }
dump_logs() {
  for f in "$BASE"/log/slurmctld.log "$BASE"/log/slurmd.log "$MUNGE_DIR"/log/munged.log; do
    if [ -f "$f" ]; then echo "----- $f (last lines)" >&2; tail -n 20 "$f" >&2; fi
  done
  return 0
}
die() { log "error: $*"; dump_logs; exit 1; }

# wait_for SECONDS CMD...: runs CMD every 0.2 s until it succeeds
wait_for() {
  local t=$1; shift
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cmd_install() {
  [ "$(id -u)" = 0 ] || die "install needs root"
  export DEBIAN_FRONTEND=noninteractive
  # keep the packages' maintainer scripts from starting daemons of their own
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -q
  # slurm-wlm: slurmctld, slurmd and slurm-client
  apt-get install -y -q --no-install-recommends slurm-wlm munge
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  dpkg-query -W -f='${Package} ${Version}\n' slurmctld slurmd slurm-client munge
}

write_conf() {
  cat > "$SLURM_CONF" <<CONF
# one-node cluster for runner's tests (written by scripts/slurm-local.sh)
ClusterName=runnertest
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
AuthType=auth/munge
CredType=cred/munge
# a private munged socket; cred_expire is also the delay before a requeued job starts again
AuthInfo=socket=${MUNGE_SOCK},cred_expire=5
StateSaveLocation=${BASE}/state
SlurmdSpoolDir=${BASE}/spool
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${BASE}/log/slurmctld.log
SlurmdLogFile=${BASE}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# schedule at submission, a full pass every 2 s, backfill every 1 s (tiny test jobs)
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
# seconds between SIGTERM and SIGKILL when a job is cancelled
KillWait=30
# finished jobs stay visible to scontrol show job for 10 minutes
MinJobAge=600
SlurmdParameters=config_overrides
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "start needs root"
  for c in munged mungekey slurmctld slurmd sbatch sinfo scontrol; do
    command -v "$c" >/dev/null || die "$c not found (run: $0 install)"
  done
  id munge >/dev/null 2>&1 || die "user 'munge' missing (run: $0 install)"
  cmd_stop quiet
  rm -rf "$BASE"/state "$BASE"/spool "$BASE"/run "$BASE"/log "$MUNGE_DIR"/run "$MUNGE_DIR"/log
  mkdir -p "$BASE"/state "$BASE"/spool "$BASE"/run "$BASE"/log
  mkdir -p "$MUNGE_DIR"/run "$MUNGE_DIR"/log "$MUNGE_DIR"/lib
  write_conf
  [ -s "$MUNGE_DIR/munge.key" ] || mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force
  chown -R munge:munge "$MUNGE_DIR"
  chmod 0711 "$MUNGE_DIR"; chmod 0755 "$MUNGE_DIR/run"
  chmod 0700 "$MUNGE_DIR/log" "$MUNGE_DIR/lib"; chmod 0600 "$MUNGE_DIR/munge.key"
  runuser -u munge -- munged \
    --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/munge.key" \
    --log-file="$MUNGE_DIR/log/munged.log" --pid-file="$MUNGED_PID" \
    --seed-file="$MUNGE_DIR/lib/munged.seed" || die "munged did not start"
  wait_for 10 sh -c "munge -n -S '$MUNGE_SOCK' | unmunge -S '$MUNGE_SOCK'" \
    || die "munge round trip failed"
  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start"
  wait_for 15 scontrol ping || die "slurmctld does not answer"
  slurmd -f "$SLURM_CONF" -N "$NODE" || die "slurmd did not start"
  wait_for 30 sh -c "sinfo -h -n '$NODE' -o %T | grep -qx idle" \
    || { sinfo -N -l >&2 || true; die "node $NODE did not become idle"; }
  log "cluster up: node $NODE ($CPUS CPUs), partition debug; SLURM_CONF=$SLURM_CONF"
}

# kill_pidfile NAME PIDFILE: SIGTERM, up to 15 s, then SIGKILL
kill_pidfile() {
  local name=$1 f=$2 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    if ! wait_for 15 sh -c "! kill -0 $pid"; then
      log "$name ($pid) ignored SIGTERM: SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

cmd_stop() {
  if pid_alive "$CTLD_PID"; then
    # jobs first: their slurmstepd processes outlive slurmd
    scancel --full --user="$(id -un)" 2>/dev/null || true
    wait_for 40 sh -c '[ -z "$(squeue -h -t R,CG 2>/dev/null)" ]' \
      || log "warning: jobs still running at stop"
  fi
  kill_pidfile slurmd "$SLURMD_PID"
  kill_pidfile slurmctld "$CTLD_PID"
  kill_pidfile munged "$MUNGED_PID"
  [ "${1:-}" = quiet ] || log "stopped"
}

cmd_status() {
  for p in "munged:$MUNGED_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
    if pid_alive "${p#*:}"; then echo "${p%%:*} running (pid $(cat "${p#*:}"))"
    else echo "${p%%:*} not running"; fi
  done
  sinfo 2>/dev/null || true
  squeue 2>/dev/null || true
}

cmd_check() {
  local out=$BASE/check jid
  rm -rf "$out"; mkdir -p "$out"
  jid=$(sbatch --parsable --array=0-1 -o "$out/%A_%a.log" \
        --wrap "echo \$SLURM_ARRAY_TASK_ID > $out/task-\$SLURM_ARRAY_TASK_ID")
  wait_for 60 sh -c "[ -z \"\$(squeue -h -j $jid 2>/dev/null)\" ]" || die "array $jid did not finish"
  for i in 0 1; do
    [ "$(cat "$out/task-$i" 2>/dev/null)" = "$i" ] || die "task $i of array $jid wrote nothing"
  done
  log "check passed: array $jid ran both tasks"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  check) cmd_check ;;
  *) echo "usage: $0 install | start | stop | status | env | check" >&2; exit 2 ;;
esac
