#!/bin/bash
cd /tmp/ph
while [ $(grep -l '^rc ' G*-marginal.log 2>/dev/null | wc -l) -lt 6 ]; do sleep 30; done
for S in 0 1 2; do for L in vls full; do nohup ./oracle22.sh $S 0.67 $L > /dev/null 2>&1 & done; done
