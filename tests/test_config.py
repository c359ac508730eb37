from pathlib import Path

import pytest

from hone.config import RunConfig, load_config
from hone.errors import HoneError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1.0e-3\n  batch_size: 4\nadapter:\n  method: full\n")
    config = load_config(path, ["train.batch_size=2", "adapter.target_modules=[q_proj, v_proj]"])
    assert config.train.learning_rate == 1e-3
    assert config.train.batch_size == 2
    assert config.adapter.method == "full"
    assert config.adapter.target_modules == ["q_proj", "v_proj"]
    assert config.train.seed == RunConfig().train.seed


def test_yaml_style_exponent_is_a_float():
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize("override, key", [
    ("train.lr=1", "train.lr"),
    ("trian.batch_size=1", "trian"),
    ("train.batch_size=abc", "train.batch_size"),
    ("train.batch_size=1.5", "train.batch_size"),
    ("model.trust_remote_code=maybe", "model.trust_remote_code"),
])
def test_bad_key_or_type_names_the_key(override, key):
    with pytest.raises(HoneError) as info:
        load_config(None, [override])
    assert key in str(info.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 4\n  epochs: [1, 2\n")
    with pytest.raises(HoneError) as info:
        load_config(path)
    assert f"{path}:" in str(info.value) and "malformed YAML" in str(info.value)


SHIPPED = sorted((ROOT / "examples").glob("**/*.yaml")) + sorted((ROOT / "src" / "hone" / "assets").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_example_config_loads(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)


@pytest.mark.parametrize("override, key", [("adapter.method=prefix", "adapter.method"),
                                           ("train.objective=dpo-ish", "train.objective")])
def test_an_unknown_method_or_objective_names_its_key_before_any_work(override, key):
    from hone.train.commands import resolve_config

    with pytest.raises(HoneError) as info:
        resolve_config(override, [], resume=None)
    assert key in str(info.value)
