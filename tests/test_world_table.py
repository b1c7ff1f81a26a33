"""experiments/world_table.py: rows recompute from the members' official figures; a row may pool seeds of runs."""

import importlib.util
import json
import os

import numpy as np
import pytest
from scipy.stats import hmean

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("world_table", os.path.join(REPO, "experiments", "world_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root, name, seeds, figures):
    """A run over the types fan and valve, one section each; figures[seed][type] = (auc_source, auc_target, pauc)."""
    run_dir = root / name
    types = ["fan", "valve"]
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"machine_types": types}))
    for machine_type in types:
        (run_dir / machine_type).mkdir()
        members = []
        for seed in seeds:
            source, target, pauc = figures[seed][machine_type]
            members.append({"name": f"seed{seed}", "seed": seed, "official": {
                "official_score": float(hmean([source, target, pauc])),
                "per_section": {"00": {"auc_source": source, "auc_target": target, "pauc": pauc}}}})
        (run_dir / machine_type / "results.json").write_text(json.dumps({"members": members}))
    return str(run_dir)


FIGURES = {0: {"fan": (0.6, 0.5, 0.55), "valve": (0.7, 0.4, 0.5)},
           1: {"fan": (0.65, 0.45, 0.5), "valve": (0.6, 0.6, 0.52)},
           2: {"fan": (0.5, 0.52, 0.51), "valve": (0.8, 0.3, 0.6)}}


def test_a_pooled_row_equals_one_run_of_every_seed(table, tmp_path):
    one = _run(tmp_path, "one", [0, 1, 2], FIGURES)
    first = _run(tmp_path, "first", [0], FIGURES)
    rest = _run(tmp_path, "rest", [1, 2], FIGURES)
    name, types, per_type, overall, dirs = table.pooled_scores(f"pooled={first}+{rest}")
    assert name == "pooled" and dirs == [first, rest] and types == ["fan", "valve"]
    _, _, per_type_one, overall_one = table.pooled_scores(one)[:4]
    assert per_type == per_type_one and overall == overall_one
    expected = [hmean([*FIGURES[s]["fan"], *FIGURES[s]["valve"]]) for s in (0, 1, 2)]
    np.testing.assert_allclose(overall, expected)
    assert table.pooled_scores(one)[0] == "one"


def test_pooling_refuses_a_repeated_seed_or_other_types(table, tmp_path):
    first = _run(tmp_path, "first", [0], FIGURES)
    again = _run(tmp_path, "again", [0, 1], FIGURES)
    with pytest.raises(ValueError, match="repeat a seed"):
        table.pooled_scores(f"{first}+{again}")
    other = _run(tmp_path, "other", [1], FIGURES)
    (tmp_path / "other" / "summary.json").write_text(json.dumps({"machine_types": ["fan"]}))
    with pytest.raises(ValueError, match="same types"):
        table.pooled_scores(f"{first}+{other}")


def test_the_json_holds_the_members_every_cell_recomputes_from(table, tmp_path, capsys):
    first = _run(tmp_path, "first", [0], FIGURES)
    rest = _run(tmp_path, "rest", [1, 2], FIGURES)
    out = tmp_path / "table.json"
    table.main([f"pooled={first}+{rest}", "--json", str(out)])
    saved = json.loads(out.read_text())["runs"]["pooled"]
    assert len(saved["all_types"]) == 3 and saved["run_dir"] == [first, rest]
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| pooled"))
    assert f"{np.mean(saved['all_types']):.4f}" in row and "| 3 |" in row
