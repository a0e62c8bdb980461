#!/bin/bash
# Usage: OUT=results/run deploy/slurm/submit.sh SHARDS [reproduce flags...]
# Queues one array task per shard and the merge, which runs once every task has succeeded.
# Prints the two job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:?usage: OUT=DIR submit.sh SHARDS [reproduce flags...]}
shift
: "${OUT:?set OUT to the run folder}"
export OUT
array=$(sbatch --parsable --array="0-$((shards - 1))" --export=ALL "$here/reproduce-array.sbatch" "$@")
merge=$(SHARDS=$shards sbatch --parsable --dependency="afterok:${array%%;*}" --export=ALL,SHARDS="$shards" "$here/merge.sbatch")
echo "$array $merge"
