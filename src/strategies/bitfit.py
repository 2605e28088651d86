"""BitFit (Ben Zaken et al. 2022): every group trains, but below the head only its biases and norm
scales/shifts, all at the head's LR: so few, and so small a change, that the rate full fine-tuning
uses would barely move them."""

from __future__ import annotations

from dataclasses import dataclass

from src.config import StrategyConfig
from src.strategies.base import Plan, Strategy, register
from src.strategies.groups import ParamInfo, is_bias_or_norm


@dataclass(frozen=True)
class BitFitConfig(StrategyConfig):
    name: str = "bitfit"


@register
class BitFit(Strategy):
    name = "bitfit"
    Config = BitFitConfig
    params = "bias_norm"

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        return [(head_lr, 0)] * num_groups

    def trains_param(self, depth: int, param: ParamInfo) -> bool:
        return depth == 0 or is_bias_or_norm(param)  # the new head trains whole
