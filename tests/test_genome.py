"""Gene activity from coordinates, on hand-made genes and regions with known answers."""

import gzip

import numpy as np
import pytest

from fastjmt.genome import gene_activity, parse_regions, read_bed, read_gtf

GENES = [
    # chrom, start, end, strand, name   (BED: 0-based, half-open)
    ("chr1", 10_000, 20_000, "+", "A"),  # window with 2 kb promoter: [8000, 20000)
    ("chr1", 50_000, 60_000, "-", "B"),  # minus strand: promoter after the end: [50000, 62000)
    ("chr2", 1_000, 3_000, "+", "C"),  # promoter clipped at 0: [0, 3000)
    ("chr3", 0, 100, "+", "D"),  # no region on chr3
]
REGIONS = [
    "chr1:7000-7999",  # 0: ends 1 bp before A's promoter window -> not linked by overlap
    "chr1:7500-8001",  # 1: overlaps A's promoter by 1 bp
    "chr1_15000_15500",  # 2: inside A's body
    "chr1-19999-20100",  # 3: overlaps A's last base
    "chr1:61000-61500",  # 4: in B's promoter (downstream of its end, minus strand)
    "chr1:62000-62500",  # 5: just after B's window
    "chr2:0-10",  # 6: C (clipped promoter)
    "chrX:0-100000",  # 7: another chromosome
    "chr1:48000-49000",  # 8: before B's body; with + strand logic it would be promoter, but B is minus
]


def expected_links():
    return {("A", 1), ("A", 2), ("A", 3), ("B", 4), ("C", 6)}


def links(ga):
    M = ga.matrix.tocoo()
    return {(ga.genes[i], j) for i, j in zip(M.row, M.col)}


def test_body_plus_promoter_overlap_known_answer():
    ga = gene_activity(read_bed(GENES), parse_regions(REGIONS), promoter=2000)
    assert links(ga) == expected_links()
    assert ga.matrix.shape == (4, 9) and set(ga.matrix.data) == {1.0}
    assert list(ga.regions) == REGIONS


def test_promoter_length_matters():
    ga = gene_activity(read_bed(GENES), parse_regions(REGIONS), promoter=0)
    assert links(ga) == {("A", 2), ("A", 3)}  # C's window is now [1000, 3000): region 6 is outside


def test_distance_decay_links_nearby_regions_with_weights():
    ga = gene_activity(read_bed(GENES), parse_regions(REGIONS), promoter=2000, max_distance=1500, decay=1000.0)
    M = ga.matrix.toarray()
    gi = {g: i for i, g in enumerate(ga.genes)}
    assert M[gi["A"], 0] == pytest.approx(np.exp(-1 / 1000))  # gap of 1 bp to A's window
    assert M[gi["B"], 5] == 1.0  # adjacent to B's window: gap 0
    assert M[gi["B"], 4] == 1.0 and M[gi["A"], 5] == 0.0
    assert M[gi["B"], 8] == pytest.approx(np.exp(-1000 / 1000))  # 1 kb before B's body
    assert M[gi["A"], 2] == 1.0 and M[gi["D"]].sum() == 0


def test_matches_a_brute_force_on_random_intervals():
    rng = np.random.default_rng(0)
    genes = [(f"chr{rng.integers(1, 4)}", int(s), int(s + rng.integers(100, 5000)), rng.choice(["+", "-"]), f"g{i}")
             for i, s in enumerate(rng.integers(0, 200_000, 80))]
    starts = rng.integers(0, 200_000, 400)
    regions = [f"chr{rng.integers(1, 4)}:{s}-{s + rng.integers(50, 3000)}" for s in starts]
    G, R = read_bed(genes), parse_regions(regions)
    for promoter, maxd in ((2000, 0), (500, 3000)):
        ga = gene_activity(G, R, promoter=promoter, max_distance=maxd, decay=2000.0).matrix.toarray()
        brute = np.zeros_like(ga)
        for i in range(len(G)):
            ws = max(0, G.start[i] - promoter) if G.strand[i] != "-" else G.start[i]
            we = G.end[i] + promoter if G.strand[i] == "-" else G.end[i]
            for j in range(len(R)):
                if R.chrom[j] != G.chrom[i]:
                    continue
                gap = max(ws - R.end[j], R.start[j] - we, 0)
                if R.start[j] < we and R.end[j] > ws:
                    brute[i, j] = 1.0
                elif maxd and gap <= maxd:
                    brute[i, j] = np.exp(-gap / 2000.0)
        np.testing.assert_allclose(ga, brute)


def test_read_gtf_and_gff(tmp_path):
    gtf = tmp_path / "genes.gtf.gz"
    with gzip.open(gtf, "wt") as fh:
        fh.write("#comment\n")
        fh.write('chr1\tsrc\tgene\t10001\t20000\t.\t+\t.\tgene_id "G1"; gene_name "A";\n')
        fh.write('chr1\tsrc\texon\t10001\t11000\t.\t+\t.\tgene_id "G1"; gene_name "A";\n')
        fh.write('chr1\tsrc\tgene\t50001\t60000\t.\t-\t.\tgene_id "G2";\n')
    G = read_gtf(gtf)
    assert list(G.name) == ["A", "G2"] and G.start.tolist() == [10_000, 50_000] and G.end.tolist() == [20_000, 60_000]
    assert list(G.strand) == ["+", "-"]
    gff = tmp_path / "genes.gff3"
    gff.write_text("chr1\tsrc\tgene\t101\t200\t.\t-\t.\tID=gene:1;Name=X\n"
                   "chr1\tsrc\tmRNA\t101\t200\t.\t-\t.\tID=tx1;Parent=gene:1\n")
    G = read_gtf(gff)
    assert list(G.name) == ["X"] and G.start.tolist() == [100]
    bad = tmp_path / "bad.gtf"
    bad.write_text("chr1 only three\n")
    with pytest.raises(ValueError, match="9 tab-separated"):
        read_gtf(bad)


def test_bad_region_names():
    with pytest.raises(ValueError, match="cannot read a region"):
        parse_regions(["chr1:abc"])
    with pytest.raises(ValueError, match="ends before"):
        parse_regions(["chr1:200-100"])


def test_aligned_reorders_and_fills_missing():
    ga = gene_activity(read_bed(GENES), parse_regions(REGIONS))
    M = ga.aligned(["C", "zzz", "A"], [REGIONS[6], REGIONS[2], "chr9:1-2"]).toarray()
    np.testing.assert_array_equal(M, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_regions_from_a_bed_table(tmp_path):
    from fastjmt.genome import read_regions

    bed = tmp_path / "peaks.bed"
    bed.write_text("chrom\tstart\tend\nchr1\t7500\t8001\nchr1\t15000\t15500\tpeakB\n")
    R = read_regions(bed)
    assert list(R.name) == ["chr1:7500-8001", "peakB"] and R.start.tolist() == [7500, 15000]
    ga = gene_activity(read_bed(GENES), R)
    assert links(ga) == {("A", 0), ("A", 1)}
    with pytest.raises(ValueError, match="3 columns"):
        read_regions([("chr1", 5)])
