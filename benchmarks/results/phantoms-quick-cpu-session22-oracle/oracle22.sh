#!/bin/bash
# session 22: oracle pseudo-labels from the session-20 shared first segments
cd /tmp/ph
export IPNP_CPU_THREADS=1
S=$1; R=$2; L=$3; O=O${R#0.}-$L-s$S
start=$(date +%s)
nice -n 10 /work/main/.venv/bin/python /work/main/benchmarks/oracle_rounds.py G${R#0.}-s$S --keep $R --loss $L --out $O > $O.log 2>&1
echo "rc $? wall $(( $(date +%s) - start )) s (after the shared segment)" >> $O.log
