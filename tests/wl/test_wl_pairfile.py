"""Reading user pair files (graph6): good files, and bad lines named by file:line."""

import networkx as nx
import pytest

from graphdl.data.registry import DATASETS
from graphdl.errors import DataError
from graphdl.wl import load_pairs, pair_verdicts, read_pair_file


def _g6(G) -> str:
    return nx.to_graph6_bytes(G, header=False).decode().strip()


def _write(tmp_path, text, name="pairs.g6"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_reads_pairs_comments_and_blank_lines(tmp_path):
    c6, t2 = _g6(nx.cycle_graph(6)), _g6(nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3)))
    sparse = nx.to_sparse6_bytes(nx.path_graph(4), header=False).decode().strip()
    text = f"# my pairs\n\n{c6} {t2}   # hexagon vs two triangles\n>>graph6<<{_g6(nx.path_graph(4))}\t{sparse}\n"
    path = _write(tmp_path, text)
    pairs = read_pair_file(path)
    assert len(pairs) == 2
    assert pairs[0].meta["name"] == "pairs.g6:3" and pairs[0].meta["expected"] == {"wl1": None, "wl3": None}
    assert pairs[0].g1.num_nodes == 6 and pairs[0].g1["node.x"].shape == (6, 1)
    assert pair_verdicts(pairs, "wl1") == [False, False]
    assert pair_verdicts(pairs, "wl3") == [True, False]
    assert len(load_pairs(path)) == 2


@pytest.mark.parametrize("line, problem", [
    ("Bw", "found 1 field"),
    ("Bw Bw Bw", "found 3 fields"),
    ("Bw B\u00e9", "second graph `B\u00e9` is not valid graph6"),
    ("Bw Ew", "second graph `Ew` is not valid graph6"),
    ("\u20acw Bw", "first graph"),
    ("? Bw", "first graph has no nodes"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, problem):
    path = _write(tmp_path, f"# header\nBw Bw\n{line}\n")
    with pytest.raises(DataError) as err:
        read_pair_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ")
    assert problem in msg


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_pair_file(str(tmp_path / "nope.g6"))
    with pytest.raises(DataError, match="no pairs"):
        read_pair_file(_write(tmp_path, "# nothing\n\n"))
    with pytest.raises(DataError, match="neither a pair family"):
        load_pairs(str(tmp_path / "nope.g6"))
    with pytest.raises(DataError, match="no parameters"):
        load_pairs(_write(tmp_path, "Bw Bw\n", "ok.g6"), seed=1)


def test_pair_file_as_dataset(tmp_path):
    import graphdl.wl  # noqa: F401

    _write(tmp_path, "Bw Bw\nCF CU\n", "user.g6")
    cls = DATASETS["wl_pairs"]
    ds = cls.load(cls.Params(type="wl_pairs", path="user.g6"), cache_dir=None, base_dir=str(tmp_path))
    assert len(ds) == 4 and ds.meta["names"] == ["user.g6:1", "user.g6:2"]
    with pytest.raises(Exception, match="exactly one of"):
        cls.Params(type="wl_pairs", path="user.g6", family="csl")
