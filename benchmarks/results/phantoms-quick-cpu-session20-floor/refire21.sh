#!/bin/bash
cd /tmp/ph
export IPNP_CPU_THREADS=1 PYTHONPATH=/tmp/wt21
S=$1; R=$2; D=D${R#0.}-s$S; F=G${R#0.}-s$S
rm -rf $F; mkdir -p $F
/work/main/.venv/bin/python - <<PY
import yaml
from pathlib import Path
from ipnp.benchmark import _settle_settings
from ipnp.config import parse_config
from dataclasses import replace
cfg = parse_config(yaml.safe_load(open("$D/config.yaml")), "$D/config.yaml")
cfg = replace(cfg, refine=replace(cfg.refine, trust_precision=0.6))
_settle_settings(Path("$F"), Path("PH"), $S, cfg)
PY
cp -r $D/shared $F/
fstart=$(date +%s)
/work/main/.venv/bin/python -c "import sys; from ipnp.cli import main; sys.argv=['ipnp']+sys.argv[1:]; main()" benchmark PH --keep $R --methods ipnp --profile quick --seed $S --config floor.yaml --out $F > $F.log 2>&1
echo "rc $? wall $(( $(date +%s) - fstart )) s (after the shared segment)" >> $F.log
