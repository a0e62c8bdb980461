#!/bin/bash
# Brings up a single-node Slurm on this machine from Debian's packages (slurmctld and slurmd
# on localhost, munge for authentication), submits the array on the tiny random model in 3
# shards with the merge as a dependent job, waits, and checks that the merged Totals equal a
# single unsharded run's exactly. Needs root and apt (or the packages already installed) and
# a built xtask (XTASK, default target/debug/xtask). Run from the repository root:
#   deploy/slurm/test-local.sh
set -euo pipefail
XTASK=$(realpath "${XTASK:-target/debug/xtask}")
work=$(mktemp -d /tmp/slurm-test.XXXXXX)
trap 'pkill -x slurmd 2>/dev/null || true; pkill -x slurmctld 2>/dev/null || true; pkill -x munged 2>/dev/null || true' EXIT

if ! command -v slurmctld >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
# munge: a fresh key, the daemon in the background.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged --force 2>/dev/null || munged --force

cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
NodeName=localhost CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
pgrep -x slurmctld >/dev/null || slurmctld -i
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc' && break; sleep 1; done
sinfo

# The tiny model and the run's settings (quick ones: the point is the scheduling).
"$XTASK" random-model --like tiny --out "$work/model" >/dev/null
flags=(--model "$work/model" --subjects 6 --methods no-change,option-bias,few-shot,pas,always-3,own-mean --test-items 10 --search-items 10 --alphas 0,2 --bootstrap 200)
export OUT="$work/run" XTASK
# The jobs' logs go to the temporary folder (shown on failure), not into the checkout.
export SBATCH_OUTPUT="$work/%x-%j.log"
cd "$(dirname "$0")/../.."
read -r array merge < <(deploy/slurm/submit.sh 3 "${flags[@]}")
echo "array job $array, merge job $merge"
for _ in $(seq 600); do
  state=$(sacct -n -X -j "$merge" -o State 2>/dev/null | head -1 | tr -d ' ' || true)
  [ -z "$state" ] && state=$(squeue -h -j "$merge" -o %T 2>/dev/null || true)
  [ -z "$state" ] && [ -f "$OUT/merged/results.json" ] && break
  case "$state" in COMPLETED) break ;; FAILED|CANCELLED*|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL) echo "merge job $state"; cat "$work"/*.log 2>/dev/null || true; exit 1 ;; esac
  sleep 2
done
[ -f "$OUT/merged/results.json" ] || { echo "no merged results"; ls -R "$OUT"; exit 1; }

# The same run unsharded, and the Totals compared exactly.
"$XTASK" reproduce --out "$work/single" "${flags[@]}" >/dev/null
python3 - "$OUT/merged/results.json" "$work/single/results.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
ta = {r["method"]: r["total"] for r in a["runs"]}
tb = {r["method"]: r["total"] for r in b["runs"]}
assert ta == tb, (ta, tb)
assert a["meta"]["cases"] == b["meta"]["cases"]
print("merged Totals equal the unsharded run's:", ta)
PY

# Nothing written into the checkout: the jobs' logs stayed in the temporary folder.
stray=$(find . -maxdepth 1 -name '*.log' -newer "$work" -print)
[ -z "$stray" ] || { echo "the Slurm test left files in the checkout:"; echo "$stray"; exit 1; }
ls "$work"/papi-*.log >/dev/null || { echo "no job logs in $work"; exit 1; }
