"""How the pipeline sizes itself to its input: the eval split's share, the Beam running mode, and the Trainer's budget
(trees grown on samples). The budget only bites past sizes no test can afford, so the Trainer's test lowers it on the
session's real examples and Transform graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow_transform as tft
from sklearn.metrics import roc_auc_score

from common import config
from tfx_modules import model, pipeline
from tfx_modules.pipeline import EVAL_BUCKETS, EVAL_ROWS


@pytest.mark.parametrize("rows", [3_000, 26_064, 325_810, 3_258_100])
def test_the_eval_split_is_a_fifth_until_it_would_pass_eval_rows(rows: int) -> None:
    splits = {split.name: split.hash_buckets for split in pipeline.split_config(rows).splits}
    eval_rows = rows * splits["eval"] / (splits["train"] + splits["eval"])
    if rows <= EVAL_BUCKETS * EVAL_ROWS:
        assert splits == {"train": EVAL_BUCKETS - 1, "eval": 1}
    else:
        assert EVAL_ROWS * 0.9 < eval_rows <= EVAL_ROWS


def test_input_rows_counts_data_lines_of_every_csv(tmp_path: Path) -> None:
    (tmp_path / "batch-1.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "batch-2.csv").write_text("a,b\n5,6\n")
    (tmp_path / "notes.txt").write_text("not\ndata\n")
    assert pipeline.input_rows(tmp_path) == 3


@pytest.mark.parametrize(
    ("beam_args", "rows", "expected"),
    [
        ("--runner=DirectRunner", 26_064, ["--runner=DirectRunner", "--direct_running_mode=in_memory"]),
        (
            "--runner=DirectRunner",
            3_258_100,
            [
                "--runner=DirectRunner",
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={os.cpu_count()}",
            ],
        ),
        ("--direct_running_mode=in_memory", 3_258_100, ["--direct_running_mode=in_memory"]),
        (
            "--runner=PortableRunner --job_endpoint=embed",
            3_258_100,
            ["--runner=PortableRunner", "--job_endpoint=embed"],
        ),
    ],
)
def test_the_direct_runner_goes_multi_process_only_on_large_inputs_and_named_settings_win(
    monkeypatch: pytest.MonkeyPatch, beam_args: str, rows: int, expected: list[str]
) -> None:
    monkeypatch.setenv("CREDIT_RISK_BEAM_ARGS", beam_args)
    assert pipeline.beam_args(rows, config.settings()) == expected


@pytest.mark.parametrize(
    ("beam_args", "expected"),
    [("--runner=DirectRunner", [pipeline.IN_MEMORY]), (f"--runner=DirectRunner {pipeline.MULTI_PROCESSING}", [])],
)
def test_example_gen_stays_in_memory_only_when_the_size_chose_multi_processing(
    monkeypatch: pytest.MonkeyPatch, beam_args: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CREDIT_RISK_BEAM_ARGS", beam_args)
    settings = config.settings()
    assert pipeline.example_gen_beam_args(pipeline.beam_args(3_258_100, settings), settings) == expected
    assert pipeline.example_gen_beam_args(pipeline.beam_args(26_064, settings), settings) == []


@pytest.fixture(scope="module")
def transformed(trained_home: Path) -> dict:
    """Both splits of the session's latest run through its Transform graph, as the Trainer reads them (other tests
    run the pipeline again in the same home)."""

    def latest(outputs: Path) -> Path:
        return max(outputs.iterdir(), key=lambda folder: int(folder.name))

    graph = latest(trained_home / "pipeline" / "Transform" / "transform_graph")
    examples = latest(trained_home / "pipeline" / "CsvExampleGen" / "examples")
    output = tft.TFTransformOutput(str(graph))

    def split(name: str):
        return model._dataset([str(path) for path in (examples / f"Split-{name}").iterdir()], output)

    return {"train": model._columns(split("train")), "eval": model._columns(split("eval"))}


def test_trees_over_budget_grow_on_samples_and_still_learn(transformed: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = len(transformed["train"][1])
    whole = model.train_trees(transformed["train"], transformed["eval"], seed=0)
    monkeypatch.setattr(model, "TREE_EXAMPLES", rows // 4)
    assert model._tree_sampling(rows, model.TREES) == {"sampling_method": "RANDOM", "subsample": (rows // 4) / rows}
    assert model._tree_sampling(rows // 4, model.TREES)["subsample"] == model.TREES["subsample"]
    sampled = model.train_trees(transformed["train"], transformed["eval"], seed=0)
    eval_columns, labels = transformed["eval"]
    scores = {name: model.trees_logit(trees, eval_columns) for name, trees in (("whole", whole), ("sampled", sampled))}
    assert not np.allclose(scores["whole"], scores["sampled"])  # the sampling reached YDF
    assert roc_auc_score(labels, scores["sampled"]) > 0.8
