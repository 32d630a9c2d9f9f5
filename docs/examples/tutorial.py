"""The tutorial's workflow, run as written by the test suite: two AnnData objects + a GTF -> clusters -> figures.

Run it with ``python docs/examples/tutorial.py OUT_DIR``.
"""

import os
import sys

import anndata

import fastjmt
from fastjmt.adata import fit_anndata
from fastjmt.report import write_report

out = sys.argv[1] if len(sys.argv) > 1 else "tutorial_out"
os.makedirs(out, exist_ok=True)

# 1. Data as it usually arrives: an RNA AnnData with gene names, an ATAC AnnData with peak names,
#    and a GTF of gene coordinates. Here they are made from the simulator, on a made-up genome where
#    gene i lies next to the peaks the simulator linked it to.
sim = fastjmt.simulate(n_rna=1500, n_atac=1500, n_genes=400, n_regions=1200, n_shared=3, n_rna_only=1,
                       separation=0.8, random_state=0)
peaks = [f"chr1:{1000 * j}-{1000 * j + 500}" for j in range(sim.atac.shape[1])]
genes = [f"Gene{i}" for i in range(sim.rna.shape[1])]
rna = anndata.AnnData(sim.rna, obs={"cell_type": sim.rna_labels})
rna.var_names = genes
atac = anndata.AnnData(sim.atac, obs={"cell_type": sim.atac_labels})
atac.var_names = peaks
gtf = os.path.join(out, "genes.gtf")
with open(gtf, "w") as fh:
    for i, row in enumerate(sim.gene_activity.tolil().rows):
        if row:  # the gene body spans its linked peaks (GTF: 1-based, inclusive)
            fh.write(f'chr1\tsim\tgene\t{1000 * min(row) + 1}\t{1000 * max(row) + 500}\t.\t+\t.\t'
                     f'gene_id "G{i}"; gene_name "Gene{i}";\n')

# 2. The three lines a user writes: fit (gene activity built from the GTF), then the report.
res = fit_anndata(rna, atac, genes=gtf, promoter=0, n_shared=3, n_rna_only=1, random_state=0)
paths = write_report(res, out, rna.obs_names, atac.obs_names, rna.obs["cell_type"], atac.obs["cell_type"])

# 3. Results sit where scanpy looks for them.
print(rna.obsm["X_jmt"].shape, atac.obs["jmt_cluster"].value_counts().to_dict())
scores = fastjmt.pooled_scores(res, rna.obs["cell_type"], atac.obs["cell_type"])
print({k: round(v, 3) for k, v in scores.items()})
print(sorted(os.path.basename(p) for p in paths.values()))
