"""A new strategy is one Python class and one YAML of its own keys: this test defines one here,
without editing any file of the project, and runs it end to end through `python -m src.train`'s
own code path (Hydra composition with the strategy's schema, the gate, training, the record)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest

from src.config import ConfigError, StrategyConfig
from src.strategies import STRATEGIES, Plan, Strategy, register


@dataclass(frozen=True)
class TopConfig(StrategyConfig):
    name: str = "toy_top"
    # The top backbone group trains at the head's LR times this; everything below it stays frozen.
    top_lr_scale: float = 0.5

    def check(self) -> None:
        if not self.top_lr_scale > 0:
            raise ConfigError(f"strategy.top_lr_scale={self.top_lr_scale!r} must be > 0")


class TopOnly(Strategy):
    name = "toy_top"
    Config = TopConfig

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        return [(0.0, None)] * (num_groups - 2) + [(head_lr * self.cfg.top_lr_scale, 0), (head_lr, 0)]


YAML = """# A toy strategy: the head and the top backbone group.
defaults:
  - base_toy_top
  - _self_

top_lr_scale: 0.25
"""


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(STRATEGIES, "toy_top", TopOnly)  # removed again after the test
    register(TopOnly)
    conf = tmp_path / "conf" / "strategy"
    conf.mkdir(parents=True)
    (conf / "toy_top.yaml").write_text(YAML)
    return tmp_path


def _train(argv, monkeypatch):
    from src import train

    monkeypatch.setattr(sys, "argv", ["src.train", *argv])
    train.cli(argv)


TINY = ["model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32",
        "dataset.train_per_class=4", "trainer.epochs=1", "trainer.progress=false", "logger.kind=none",
        "trainer.drift_probe=0"]


def test_a_toy_strategy_defined_in_a_test_runs_end_to_end(toy, monkeypatch):
    out = toy / "run"
    _train(["strategy=toy_top", f"hydra.searchpath=[file://{toy / 'conf'}]", f"hydra.run.dir={out}", *TINY],
           monkeypatch)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["strategy"] == "toy_top"
    assert result["strategy_params"] == {"top_lr_scale": 0.25}  # its own knob, from its own YAML
    groups = json.loads((out / "param_groups.json").read_text())["groups"]
    head, top = groups[-1], groups[-2]
    assert top["lr"] == pytest.approx(head["lr"] * 0.25) and top["epochs"] == [0]
    assert all(g["epochs"] == [] for g in groups[:-2])  # everything below stays frozen
    assert result["trainable_params"] == head["num_params"] + top["num_params"]


def test_a_toy_strategy_s_knobs_are_type_checked_and_its_own(toy, monkeypatch, capsys):
    common = ["strategy=toy_top", f"hydra.searchpath=[file://{toy / 'conf'}]", f"hydra.run.dir={toy / 'bad'}", *TINY]
    for extra, message in [("strategy.top_lr_scale=-1", "strategy.top_lr_scale=-1"),
                           ("strategy.top_lr_scale=abc", "strategy.top_lr_scale"),
                           ("strategy.lr_decay=2", "strategy.lr_decay")]:
        with pytest.raises(SystemExit) as stop:
            _train([*common, extra], monkeypatch)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and len(err.splitlines()) == 1 and message in err, (extra, err)
    assert not (toy / "bad").exists()
