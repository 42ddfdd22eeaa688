"""The bulk CSV executor against TFX's own: the same tf.Examples in the same splits, file by file and across files."""

from __future__ import annotations

from pathlib import Path

import pytest
import tensorflow as tf
from tfx.components.example_gen import utils
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from data.generate import generate
from tfx_modules.components import csv_example_gen
from tfx_modules.data_gate import dataset

pytestmark = pytest.mark.slow  # CsvExampleGen's executors on Beam, TFX's and ours, per test: tens of seconds

SPLITS = ("train", "eval")
OUTPUT_CONFIG = example_gen_pb2.Output(  # the pipeline's split
    split_config=example_gen_pb2.SplitConfig(
        splits=[
            example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
            example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
        ]
    )
)


def examples_by_split(executor: type, input_base: Path, out: Path) -> dict[str, list[bytes]]:
    """Run `executor` as the CsvExampleGen component would; each split's records, parsed and sorted."""
    artifact = standard_artifacts.Examples()
    artifact.uri = str(out)
    executor().Do(
        {},
        {"examples": [artifact]},
        {
            "input_base": str(input_base),
            "input_config": proto_utils.proto_to_json(utils.make_default_input_config()),
            "output_config": proto_utils.proto_to_json(OUTPUT_CONFIG),
            "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        },
    )
    found = {}
    for split in SPLITS:
        files = tf.io.gfile.glob(str(out / f"Split-{split}" / "*.gz"))
        records = tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
        found[split] = sorted(tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records)
    return found


def assert_same_as_tfx(input_base: Path, tmp_path: Path) -> dict[str, list[bytes]]:
    ours = examples_by_split(csv_example_gen.Executor, input_base, tmp_path / "ours")
    assert ours == examples_by_split(tfx_csv_executor.Executor, input_base, tmp_path / "tfx")
    return ours


def test_generated_batches_with_missing_values(tmp_path: Path) -> None:
    frame = generate(3000, seed=3)
    assert frame["loan_int_rate"].isna().any() and frame["person_emp_length"].isna().any()
    dataset.write_canonical(frame, tmp_path / "in" / "batch.csv")

    ours = assert_same_as_tfx(tmp_path / "in", tmp_path)

    assert sum(map(len, ours.values())) == 3000 and 400 < len(ours["eval"]) < 800


def test_a_file_read_in_parts_gives_every_row_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files are read in parts that Beam's workers share; the parts' edges fall inside lines."""
    dataset.write_canonical(generate(3000, seed=4), tmp_path / "in" / "batch.csv")
    size = (tmp_path / "in" / "batch.csv").stat().st_size
    monkeypatch.setattr(csv_example_gen, "PART_BYTES", -(-size // 8))
    assert csv_example_gen._parts(str(tmp_path / "in" / "batch.csv")) == 8

    ours = assert_same_as_tfx(tmp_path / "in", tmp_path)

    assert sum(map(len, ours.values())) == 3000


def test_files_of_one_split_share_the_widest_type(tmp_path: Path) -> None:
    """A column of whole numbers in one file and fractions in another is float in both; text makes it bytes;
    "NA" and "nan" are values, not missing; an empty field has no value; a quoted field may hold a comma or a line
    break."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("n,x,t,label\n1,7,NA,0\n2,,b,1\n3,9,,0\n")
    (tmp_path / "in" / "b.csv").write_text('n,x,t,label\n4,0.5,c,1\n5,nan,d,0\n6,x1,"e,f",1\n7,1,"g\nh",0\n')

    ours = assert_same_as_tfx(tmp_path / "in", tmp_path)

    rows = by_n(ours)
    assert list(rows[1]["x"].bytes_list.value) == [b"7"] and list(rows[2]["x"].bytes_list.value) == []
    assert list(rows[1]["t"].bytes_list.value) == [b"NA"] and list(rows[6]["t"].bytes_list.value) == [b"e,f"]
    assert list(rows[7]["t"].bytes_list.value) == [b"g\nh"]


def test_a_float_column_stays_float_across_files(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("n,x\n1,7\n2,8\n")
    (tmp_path / "in" / "b.csv").write_text("n,x\n3,0.25\n4,\n")

    ours = assert_same_as_tfx(tmp_path / "in", tmp_path)

    rows = by_n(ours)
    assert [rows[n]["x"].WhichOneof("kind") for n in (1, 2, 3, 4)] == ["float_list"] * 4
    assert list(rows[1]["x"].float_list.value) == [7.0] and list(rows[4]["x"].float_list.value) == []


def test_the_real_dataset(real_csv: Path, tmp_path: Path) -> None:
    """32,581 rows as Kaggle ships them (not rewritten canonically)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / real_csv.name).symlink_to(real_csv)

    ours = assert_same_as_tfx(tmp_path / "in", tmp_path)

    assert sum(map(len, ours.values())) == 32581


def by_n(splits: dict[str, list[bytes]]) -> dict[int, dict]:
    """Every split's examples by their column `n`: each one's features."""
    examples = (tf.train.Example.FromString(r) for records in splits.values() for r in records)
    return {e.features.feature["n"].int64_list.value[0]: e.features.feature for e in examples}
