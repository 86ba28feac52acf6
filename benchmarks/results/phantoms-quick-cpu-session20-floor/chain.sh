#!/bin/bash
# $1 = seed, $2 = keep ratio (0.33 / 0.67)
cd /tmp/ph
export IPNP_CPU_THREADS=1 PYTHONPATH=/tmp/wt20
S=$1; R=$2; D=D${R#0.}-s$S; F=F${R#0.}-s$S
ipnp() { /work/main/.venv/bin/python -c "import sys; from ipnp.cli import main; sys.argv=['ipnp']+sys.argv[1:]; main()" "$@"; }
start=$(date +%s)
( ipnp benchmark PH --keep $R --methods ipnp --profile quick --seed $S --out $D > $D.log 2>&1; echo "rc $? wall $(( $(date +%s) - start )) s" >> $D.log ) &
until ls -d $D/shared/*/marginal-epoch* >/dev/null 2>&1; do sleep 20; if grep -q "^rc " $D.log; then break; fi; done
fstart=$(date +%s)
mkdir -p $F && cp -r $D/shared $F/
ipnp benchmark PH --keep $R --methods ipnp --profile quick --seed $S --config floor.yaml --out $F > $F.log 2>&1
echo "rc $? wall $(( $(date +%s) - fstart )) s (after the shared segment)" >> $F.log
wait
