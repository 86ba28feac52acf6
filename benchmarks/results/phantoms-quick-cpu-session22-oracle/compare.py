# As run in session 22 (python compare.py 0.33; python compare.py 0.67) from /tmp/ph: full-labels from session 7,
# marginal and ipnp from G<R>-s<S> (session 20 + marg22.sh), oracles from O<R>-<loss>-s<S> (oracle22.sh).
import json, csv, sys, numpy as np, os
R=sys.argv[1] if len(sys.argv)>1 else '0.33'; r=R[2:]
full={}
for s in (0,1,2):
    for row in csv.DictReader(open(f'/work/main/benchmarks/results/phantoms-quick-cpu-seeds-session7/seed{s}/table.csv')):
        if row['organ_id']: full.setdefault(s,{})[int(row['organ_id'])]=float(row['full-labels DSC (%)'] or 'nan')
names={}
def summ(path):
    if not os.path.isfile(path): return None
    d=json.load(open(path)); out={}
    for k,o in d['organs'].items():
        names[o['id']]=k; out[o['id']]=100*o['dsc'] if o['dsc'] is not None else float('nan')
    return 100*d['mean_dsc'], out
cols={'full-labels':{}, 'marginal':{}, 'ipnp':{}, 'oracle-vls':{}, 'oracle-novls':{}, 'oracle-full':{}}
for s in (0,1,2):
    cols['full-labels'][s]=(np.nanmean(list(full[s].values())), full[s])
    cols['marginal'][s]=summ(f'/tmp/ph/G{r}-s{s}/runs/marginal/keep{R}/evaluation/summary.json')
    cols['ipnp'][s]=summ(f'/tmp/ph/G{r}-s{s}/runs/ipnp/keep{R}/evaluation/summary.json')
    for L in ('vls','novls','full'):
        cols['oracle-'+L][s]=summ(f'/tmp/ph/O{r}-{L}-s{s}/evaluation/summary.json')
print(f'keep {R}: mean DSC per seed (ratio to full-labels)')
for c,v in cols.items():
    vals=[v[s][0] if v.get(s) else None for s in (0,1,2)]
    rat=[v[s][0]/cols['full-labels'][s][0] if v.get(s) else None for s in (0,1,2)]
    ok=[x for x in vals if x is not None]
    print(f'{c:12s} '+' / '.join('–' if x is None else f'{x:.2f}' for x in vals)+f'  mean {np.mean(ok) if ok else float("nan"):.2f}  ratio '+' / '.join('–' if x is None else f'{x:.3f}' for x in rat)+(f' mean {np.mean([x for x in rat if x]):.3f}' if ok else ''))
print('per organ, mean over seeds:')
for o in sorted(cols['full-labels'][0][1]):
    line=f'{o:2d} {names.get(o,"?")[:20]:20s}'
    for c,v in cols.items():
        xs=[v[s][1][o] for s in (0,1,2) if v.get(s)]
        line+=f' {c[:8]:>8s} {np.mean(xs) if xs else float("nan"):6.2f}'
    print(line)
