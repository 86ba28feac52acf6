# As run in session 22 from /tmp/ph: where the accepted pseudo-labels of the bladder (14) and the gallbladder (4)
# lie outside the organ, by the organ the reference says is there (0: background), per seed and round.
import json, numpy as np, SimpleITK as sitk, collections, os
for s in (0,1,2):
  for r in (1,2,3):
    base=f'G33-s{s}/runs/ipnp/keep0.33/rounds/{r}'
    lab=f'{base}/labels'
    if not os.path.isdir(lab): continue
    man=json.load(open(f'{lab}/pseudo_labels.json'))
    for organ in (14,4):
        fp=collections.Counter(); tot=0
        for c,orgs in man.items():
            if organ not in orgs: continue
            m=sitk.GetArrayFromImage(sitk.ReadImage(f'{lab}/{c}.nii.gz'))
            f=sitk.GetArrayFromImage(sitk.ReadImage(f'G33-s{s}/data/keep0.33/labelsTr_full/{c}.nii.gz'))
            sel=(m==organ); tot+=sel.sum()
            for k,n in zip(*np.unique(f[sel & (f!=organ)],return_counts=True)): fp[int(k)]+=int(n)
        if tot: print(f's{s} r{r} organ {organ}: label voxels {tot}, FP {sum(fp.values())} by true label', dict(fp.most_common(4)))
