"""Strict dataclass configs (llmrec.config) and atomic writes (llmrec.io)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.config import Config
from llmrec.errors import ConfigError
from llmrec.io import atomic_dir, atomic_path, write_json_atomic, write_text_atomic


@dataclasses.dataclass
class Optim(Config):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")


@dataclasses.dataclass
class Train(Config):
    name: str = "run"
    epochs: int = 3
    use_cpu: bool = True
    k: int | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_from_dict_coerces_types():
    cfg = Train.from_dict({"epochs": 5, "k": 4, "optim": {"lr": 1, "betas": [0.8, 0.9]}, "tags": ["a"]})
    assert cfg.epochs == 5 and cfg.k == 4 and cfg.tags == ["a"]
    assert isinstance(cfg.optim, Optim)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # int -> float
    assert cfg.optim.betas == (0.8, 0.9)  # JSON list -> tuple
    assert Train.from_dict({"k": None}).k is None
    assert Train.from_dict({"optim": Optim(lr=0.5)}).optim.lr == 0.5  # an instance is accepted as is


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\] for Train; allowed: .*'epochs'"):
        Train.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"train.json.optim: unknown key\(s\) \['momentum'\]"):
        Train.from_dict({"optim": {"momentum": 0.9}}, source="train.json")


@pytest.mark.parametrize("data, message", [
    ({"epochs": "3"}, "config.epochs: expected int, got str ('3')"),
    ({"epochs": 2.5}, "config.epochs: expected int, got float"),
    ({"epochs": True}, "config.epochs: expected int, got bool"),
    ({"name": 7}, "config.name: expected str, got int"),
    ({"use_cpu": "yes"}, "config.use_cpu: expected bool, got str"),
    ({"k": "4"}, "config.k: expected int, got str"),
    ({"optim": {"lr": False}}, "config.optim.lr: expected float, got bool"),
    ({"optim": {"betas": 0.9}}, "config.optim.betas: expected a list, got float"),
    ({"optim": [1e-3]}, "config.optim: expected a mapping for Optim, got list"),
])
def test_wrong_types_are_errors(data, message):
    with pytest.raises(ConfigError) as err:
        Train.from_dict(data)
    assert message in str(err.value)


def test_post_init_validation_surfaces_as_config_error():
    with pytest.raises(ConfigError, match="lr must be positive"):
        Train.from_dict({"optim": {"lr": -1}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        Train.from_dict([("epochs", 1)])  # type: ignore[arg-type]


def test_save_load_round_trip(tmp_path):
    cfg = Train(name="x", epochs=7, k=2, tags=["t"], optim=Optim(lr=0.01, betas=(0.5, 0.6)))
    path = tmp_path / "sub" / "config.json"
    cfg.save(path)
    assert json.loads(path.read_text())["optim"] == {"lr": 0.01, "betas": [0.5, 0.6]}
    assert Train.load(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read config") as err:
        Train.load(bad)
    assert str(bad) in str(err.value)
    bad.write_text(json.dumps({"epochz": 1}))
    with pytest.raises(ConfigError, match="unknown key") as err:
        Train.load(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(ConfigError, match="cannot read config"):
        Train.load(tmp_path / "missing.json")


def test_atomic_path_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new but partial")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_atomic_failure_keeps_old_file(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(2), "p": Path("x")})
    assert json.loads(target.read_text()) == {"a": 3, "b": 0.5, "c": [0, 1], "p": "x"}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text())["a"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_dir(tmp_path):
    dest = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("partial")
        raise RuntimeError("save failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("save failed")
    assert sorted(p.name for p in dest.iterdir()) == ["a"]  # the old folder is intact
    with atomic_dir(dest) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]  # replaced as a whole
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
