"""Typed configs: validation errors name the key; overrides; relative paths."""

import pytest

from textdistill.config import load_config, parse_override
from textdistill.errors import TextDistillError

BASE = """
output_dir: out
data:
  train_file: train.tsv
  validation_file: dev.tsv
teacher:
  model: all-MiniLM-L6-v2
student:
  num_layers: 2
"""


def test_load_resolves_data_paths_against_config_folder(write, tmp_path):
    p = write("c.yaml", BASE)
    cfg = load_config(p)
    assert cfg.data.train_file == str(tmp_path / "train.tsv")
    assert cfg.output_dir == "out"  # relative to the working directory, like HF's output_dir
    assert cfg.teacher.model == "all-MiniLM-L6-v2"  # not a path: left for the model resolver
    assert cfg.student.training.learning_rate is None  # not given: chosen by short trials (textdistill.tuning)


def test_overrides_typed_and_nested(write):
    p = write("c.yaml", BASE)
    cfg = load_config(p, ["student.training.learning_rate=3e-5", "distill.temperature=4", "student.num_layers=3"])
    assert cfg.student.training.learning_rate == pytest.approx(3e-5)
    assert cfg.distill.temperature == 4.0
    assert cfg.student.num_layers == 3
    assert parse_override("a.b=[0, 5]") == (["a", "b"], [0, 5])


@pytest.mark.parametrize(
    "extra, message",
    [
        ("bogus: 1\n", r"bogus: unknown key"),
        ("distill:\n  temprature: 2\n", r"distill\.temprature: unknown key"),
        ("distill:\n  temperature: hot\n", r"distill\.temperature: Input should be a valid number"),
        ("distill:\n  alpha: 1.5\n", r"distill\.alpha: Input should be less than or equal to 1"),
        ("distill:\n  loss: cosine\n", r"distill\.loss: Input should be 'kl' or 'mse'"),
        ("seed: [1]\n", r"seed: Input should be a valid integer"),
    ],
)
def test_bad_values_name_the_key(write, extra, message):
    p = write("c.yaml", BASE + extra)
    with pytest.raises(TextDistillError, match=r"c\.yaml: invalid config: " + message):
        load_config(p)


def test_student_needs_exactly_one_recipe(write):
    p = write("c.yaml", BASE.replace("num_layers: 2", "num_layers: 2\n  layers: [0, 5]"))
    with pytest.raises(
        TextDistillError,
        match=r"student: give exactly one of layers, num_layers, model, "
        r"config_overrides",
    ):
        load_config(p)
    p = write("d.yaml", BASE.replace("num_layers: 2", "layers: [1, 1]"))
    with pytest.raises(TextDistillError, match="distinct non-negative"):
        load_config(p)


def test_yaml_errors(write):
    with pytest.raises(TextDistillError, match=r"e\.yaml: config file is empty"):
        load_config(write("e.yaml", ""))
    with pytest.raises(TextDistillError, match=r"l\.yaml: expected a mapping"):
        load_config(write("l.yaml", "- a\n- b\n"))
    with pytest.raises(TextDistillError, match=r"t\.yaml.*not valid YAML"):
        load_config(write("t.yaml", "a: !!python/object/apply:os.system ['true']\n"))
    with pytest.raises(TextDistillError, match=r"missing\.yaml: config file not found"):
        load_config("missing.yaml")
    with pytest.raises(TextDistillError, match=r"override 'nokey': expected KEY=VALUE"):
        load_config(write("c.yaml", BASE), ["nokey"])


def test_config_round_trips_to_yaml(write, tmp_path):
    cfg = load_config(write("c.yaml", BASE))
    again = load_config(write("again.yaml", cfg.to_yaml()))
    assert again.model_dump() == cfg.model_dump()  # (each remembers its own file: an output folder may not replace it)
    assert again._config_file == str(tmp_path / "again.yaml")
