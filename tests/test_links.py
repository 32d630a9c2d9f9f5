"""Gene–region links built from real-world names: contigs, gene ids, duplicates, BED columns, coverage."""

import logging
import warnings

import pytest
import scipy.sparse as sp

import fastjmt
from fastjmt.genome import (LinkCoverageWarning, check_links, gene_activity, link_coverage, normalize_chrom,
                            parse_regions, read_bed, read_gtf, strip_version)


@pytest.fixture(scope="module")
def sim():
    return fastjmt.simulate(n_rna=300, n_atac=300, n_genes=150, n_regions=450, n_shared=2, separation=0.8,
                            random_state=0)


def _regions(n, prefix="chr"):
    return [f"{prefix}1:{1000 * j}-{1000 * j + 500}" for j in range(n)]


def _gtf(path, A, contig="1", versioned=True):
    """One GTF ``gene`` line per gene, spanning the regions it is linked to (unlinked genes far away on contig 2)."""
    A = sp.csr_matrix(A)
    with open(path, "w") as fh:
        for i in range(A.shape[0]):
            cols = A.indices[A.indptr[i]:A.indptr[i + 1]]
            chrom, s, e = (contig, 1000 * cols.min() + 1, 1000 * cols.max() + 500) if cols.size else \
                (contig.replace("1", "2"), 10_000_000 + 10_000 * i + 1, 10_000_000 + 10_000 * i + 100)
            gid = f"ENSG{i:011d}" + (".3" if versioned else "")
            fh.write(f'{chrom}\thavana\tgene\t{s}\t{e}\t.\t+\t.\tgene_id "{gid}"; gene_name "Sym{i}";\n')
    return path


def test_contig_names_are_harmonised():
    assert [normalize_chrom(c) for c in ("chr1", "1", "chrM", "M", "MT", "chrX", "Chr2")] == \
        ["1", "1", "MT", "MT", "MT", "X", "2"]
    genes = read_bed([("1", 100, 200, "g", 0, "+"), ("MT", 0, 50, "m", 0, "+")])
    ucsc = gene_activity(genes, parse_regions(["chr1:150-160", "chrM:10-20", "chr2:150-160"]), promoter=0)
    assert ucsc.matrix.toarray().tolist() == [[1, 0, 0], [0, 1, 0]]
    ensembl = gene_activity(read_bed([("chr1", 100, 200, "g", 0, "+")]), parse_regions(["1:150-160"]), promoter=0)
    assert ensembl.matrix.nnz == 1


def test_ucsc_peaks_with_an_ensembl_gtf_link_as_with_matching_names(sim, tmp_path):
    G = read_gtf(_gtf(tmp_path / "ens.gtf", sim.gene_activity, contig="1"))
    G_ucsc = read_gtf(_gtf(tmp_path / "ucsc.gtf", sim.gene_activity, contig="chr1"))
    regions = parse_regions(_regions(450))
    a = gene_activity(G, regions, promoter=0).matrix
    b = gene_activity(G_ucsc, regions, promoter=0).matrix
    assert a.nnz == b.nnz > 0 and (a != b).nnz == 0
    assert link_coverage(a).genes_linked == 130


@pytest.mark.parametrize("names", ["unversioned_ids", "versioned_ids", "symbols"])
def test_genes_match_on_symbol_or_on_id_without_version(sim, tmp_path, names):
    ga = gene_activity(read_gtf(_gtf(tmp_path / "g.gtf", sim.gene_activity)), parse_regions(_regions(450)),
                       promoter=0)
    var_names = {"unversioned_ids": [f"ENSG{i:011d}" for i in range(150)],
                 "versioned_ids": [f"ENSG{i:011d}.7" for i in range(150)],
                 "symbols": [f"Sym{i}" for i in range(150)]}[names]
    A = ga.aligned(var_names, _regions(450))
    assert link_coverage(A).genes_linked == 130
    by_id = ga.aligned(var_names, _regions(450), gene_key="id")
    assert link_coverage(by_id).genes_linked == (0 if names == "symbols" else 130)
    assert strip_version("ENSG00000000003.15") == "ENSG00000000003" and strip_version("RP11-34P13.3") == "RP11-34P13.3"


def test_every_copy_of_a_duplicated_gene_name_gets_the_links():
    ga = gene_activity(read_bed([("chr1", 100, 200, "A"), ("chr1", 1000, 1100, "B")]),
                       parse_regions(["chr1:150-160", "chr1:1050-1060"]), promoter=0)
    M = ga.aligned(["A", "B", "A"], ["chr1:150-160", "chr1:1050-1060"]).toarray()
    assert M.tolist() == [[1, 0], [0, 1], [1, 0]]


def test_regions_match_on_coordinates_whatever_the_naming_style():
    ga = gene_activity(read_bed([("1", 100, 200, "A")]), parse_regions(["1:150-160"]), promoter=0)
    assert ga.aligned(["A"], ["chr1-150-160"]).toarray().tolist() == [[1]]


def test_bed6_is_read_as_the_bed_specification_defines_it(tmp_path):
    bed = tmp_path / "genes.bed"
    bed.write_text("chr1\t100\t200\tA\t0\t-\nchr1\t1000\t1100\tB\t960\t+\n")
    G = read_bed(bed)
    assert list(G.name) == ["A", "B"] and list(G.strand) == ["-", "+"]
    assert list(read_bed([("chr1", 1, 2, "X")]).name) == ["X"]  # BED4
    assert list(read_bed([("chr1", 1, 2, "X", "5")]).name) == ["X"]  # BED5: score, no strand
    assert list(read_bed([("chr1", 1, 2, "-", "X")]).strand) == ["-"]  # fastjmt's older 5-column order
    ga = gene_activity(G, parse_regions(["chr1:250-260", "chr1:1050-1060"]), promoter=100)
    assert ga.matrix.toarray().tolist() == [[1, 0], [0, 1]]  # A is on the minus strand: promoter after its end
    with pytest.raises(ValueError, match="at least 4 columns"):
        read_bed([("chr1", 1, 2)])


def test_no_links_is_an_error_naming_both_inputs():
    A = sp.csr_matrix((3, 4))
    with pytest.raises(ValueError, match=r"no link.*'g0'.*'ENSG1'.*'chr1:0-10'"):
        check_links(A, ["g0", "g1", "g2"], ["chr1:0-10"] * 4, linked_genes=["ENSG1"])
    with pytest.raises(ValueError, match="gene_activity has no nonzero link"):
        d = fastjmt.simulate(n_rna=40, n_atac=40, n_genes=30, n_regions=60, random_state=0)
        fastjmt.fit(d.rna, d.atac, sp.csr_matrix(d.gene_activity.shape), n_shared=5, max_iter=2)


def test_low_coverage_warns_and_coverage_is_reported(sim, caplog):
    A = sim.gene_activity.tolil()
    A[20:, :] = 0  # only a few genes keep links
    with pytest.warns(LinkCoverageWarning, match="low gene activity coverage"):
        check_links(A.tocsr(), [f"g{i}" for i in range(150)], _regions(450))
    with caplog.at_level(logging.INFO, logger="fastjmt"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fastjmt.fit(sim.rna, sim.atac, A.tocsr(), n_shared=2, max_iter=3)
    assert any(issubclass(w.category, LinkCoverageWarning) for w in caught)
    assert "gene activity:" in caplog.text and "RNA genes" in caplog.text
    cov = res.link_coverage
    assert cov["n_genes"] == 150 and cov["genes_linked"] == link_coverage(A).genes_linked < 20
    assert cov["gene_share"] == pytest.approx(cov["genes_linked"] / 150)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinkCoverageWarning)  # the simulator's own links: no warning
        full = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=2, max_iter=3)
    assert full.link_coverage["genes_linked"] == 130
