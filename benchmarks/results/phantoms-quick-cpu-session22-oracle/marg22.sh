#!/bin/bash
# session 22: marginal from the same shared first segment as the session-20 ipnp columns (paired)
cd /tmp/ph
export IPNP_CPU_THREADS=1
S=$1; R=$2; F=G${R#0.}-s$S
start=$(date +%s)
nice -n 10 /work/main/.venv/bin/ipnp benchmark PH --keep $R --methods marginal --profile quick --seed $S --config floor.yaml --out $F > $F-marginal.log 2>&1
echo "rc $? wall $(( $(date +%s) - start )) s (after the shared segment)" >> $F-marginal.log
