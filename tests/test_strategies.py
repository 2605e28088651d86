"""Strategy schedules and optimizer groups on tiny real timm models, without training."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch

from src.config import ConfigError, OptimConfig, StrategyConfig, strategy_config_class
from src.training.optim import build_optimizer, build_scheduler, param_groups
from src.strategies import STRATEGIES, ParamInfo, Plan, Strategy, apply_epoch, layer_groups, plan_schedule
from src.strategies.l2sp import l2sp_penalty


@pytest.fixture(scope="module", params=["test_efficientnet", "test_resnet", "test_vit"])
def architecture(request):
    torch.manual_seed(0)
    return timm.create_model(request.param, pretrained=False, num_classes=5)


@pytest.fixture
def model(architecture):
    """A fresh copy for each test: tests freeze, move and backpropagate through it, and a model
    shared across tests would carry one test's weights, grads and flags into the next."""
    return copy.deepcopy(architecture)


def _strategy(**kw):
    """A strategy's config from its own class (name= picks it; layerwise by default)."""
    return strategy_config_class(kw.get("name", "layerwise"))(**kw)


def _schedule(model, epochs=4, **kw):
    groups = layer_groups(model)
    return groups, plan_schedule(_strategy(**kw), groups, head_lr=1e-3, epochs=epochs)


def test_groups_partition_parameters_with_head_last(model):
    groups = layer_groups(model)
    names = [n for g in groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    head = {n for n, p in model.named_parameters() if any(p is q for q in model.get_classifier().parameters())}
    assert groups[-1].name == "head" and set(groups[-1].param_names) == head
    assert sum(g.num_params for g in groups) == sum(p.numel() for p in model.parameters())
    assert len(groups) >= 4  # stem, stages, head: the model's own group_matcher, not one blob


def test_frozen_trains_only_the_head(model):
    groups, s = _schedule(model, name="frozen")
    assert [g.epochs for g in s.groups[:-1]] == [()] * (len(groups) - 1)
    assert s.groups[-1].epochs == (0, 1, 2, 3) and s.groups[-1].lr == 1e-3
    assert s.trainable_params == groups[-1].num_params


def test_full_trains_everything_backbone_at_a_tenth(model):
    groups, s = _schedule(model, name="full")
    assert all(g.epochs == (0, 1, 2, 3) for g in s.groups)
    assert [g.lr for g in s.groups[:-1]] == pytest.approx([1e-4] * (len(groups) - 1))
    assert s.trainable_params == sum(p.numel() for p in model.parameters())


def test_bitfit_trains_the_head_and_only_biases_and_norms_below_it(model):
    groups, s = _schedule(model, name="bitfit")
    assert s.params == "bias_norm" and all(g.epochs == (0, 1, 2, 3) and g.lr == 1e-3 for g in s.groups)
    small = {n for n, p in model.named_parameters() if p.ndim <= 1}
    head = set(groups[-1].param_names)
    expected = {n for n in small if n not in head} | head
    assert s.trainable_params == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert apply_epoch(model, groups, s, 0) == s.trainable_params
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    assert any(p.ndim > 1 for n, p in model.named_parameters() if n in head)  # the head trains whole


def test_l2sp_penalty_pulls_the_backbone_to_its_start_and_the_head_to_zero(model):
    groups, s = _schedule(model, name="l2sp")
    assert [g.lr for g in s.groups] == [g.lr for g in _schedule(model, name="full")[1].groups]  # full's LRs
    apply_epoch(model, groups, s, 0)
    penalty = l2sp_penalty(model, groups, alpha=0.5, beta=0.25)
    params = dict(model.named_parameters())
    head = sum(float((params[n].detach() ** 2).sum()) for n in groups[-1].param_names if params[n].ndim > 1)
    assert float(penalty().detach()) == pytest.approx(0.5 * 0.25 * head, rel=1e-5)  # at the start: the head term
    name = next(n for n in groups[1].param_names if params[n].ndim > 1)
    with torch.no_grad():
        params[name].add_(0.1)
    moved = 0.5 * 0.5 * 0.01 * params[name].numel()
    assert float(penalty().detach()) == pytest.approx(0.5 * 0.25 * head + moved, rel=1e-4)
    penalty().backward()  # differentiable in the live weights
    assert params[name].grad is not None and params[name].grad.abs().max() > 0


def test_tests_do_not_share_a_mutated_model(architecture, model):
    # the l2sp test above moves a weight and backpropagates: on its own copy, never on the architecture
    assert model is not architecture
    assert all(p.grad is None and p.requires_grad for p in architecture.parameters())
    fresh = dict(architecture.named_parameters())
    assert all(torch.equal(p, fresh[n]) for n, p in model.named_parameters())


def test_lpft_probes_the_head_then_trains_everything(model):
    groups, s = _schedule(model, epochs=5, name="lpft", probe_epochs=2)
    assert s.groups[-1].epochs == (0, 1, 2, 3, 4) and s.groups[-1].lr == 1e-3
    assert all(g.epochs == (2, 3, 4) and g.lr == pytest.approx(1e-4) for g in s.groups[:-1])
    assert s.active(1) == (False,) * (len(groups) - 1) + (True,) and all(s.active(2))
    for bad in (0, 5):
        with pytest.raises(ConfigError, match=rf"strategy.probe_epochs={bad} must be in 1..4"):
            _schedule(model, epochs=5, name="lpft", probe_epochs=bad)
    with pytest.raises(ConfigError) as err:  # one epoch: it said "must be in 1..0", a range with nothing in it
        _schedule(model, epochs=1, name="lpft", probe_epochs=2)
    assert str(err.value) == ("strategy=lpft needs trainer.epochs >= 2 (trainer.epochs=1): a probe phase "
                              "(strategy.probe_epochs=2) and a fine-tuning phase")


def test_surgical_trains_one_chosen_group_and_the_head(model):
    groups, s = _schedule(model, name="surgical", surgical_group=1)
    trained = [i for i, g in enumerate(s.groups) if g.epochs]
    assert trained == [1, len(groups) - 1] and s.groups[1].lr == pytest.approx(1e-4)
    assert s.trainable_params == groups[1].num_params + groups[-1].num_params
    with pytest.raises(ConfigError, match=rf"strategy.surgical_group={len(groups) - 1} is not a backbone group"):
        _schedule(model, name="surgical", surgical_group=len(groups) - 1)


def test_layerwise_lr_decays_by_factor_per_group(model):
    groups, s = _schedule(model, name="layerwise", lr_decay=2.6)
    lrs = [g.lr for g in s.groups]
    assert lrs[-1] == 1e-3
    for lower, upper in zip(lrs, lrs[1:]):
        assert upper / lower == pytest.approx(2.6)
    assert s.groups[0].lr == pytest.approx(1e-3 / 2.6 ** (len(groups) - 1))


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_unfreeze_depth_trains_top_k_groups(model, depth):
    groups, s = _schedule(model, name="layerwise", unfreeze_depth=depth)
    training = [bool(g.epochs) for g in s.groups]
    assert training == [False] * (len(groups) - 1 - depth) + [True] * (depth + 1)
    assert s.trainable_params == sum(g.num_params for g in groups[len(groups) - 1 - depth :])


def test_depth_beyond_group_count_is_an_error(model):
    groups = layer_groups(model)
    with pytest.raises(ConfigError, match="strategy.unfreeze_depth=99 exceeds"):
        plan_schedule(_strategy(name="layerwise", unfreeze_depth=99), groups, 1e-3, 3)
    s = plan_schedule(_strategy(name="layerwise", unfreeze_depth=len(groups) - 1), groups, 1e-3, 3)
    assert all(g.epochs for g in s.groups)


def test_gradual_unfreezing_starts_one_group_every_n_epochs(model):
    groups, s = _schedule(model, epochs=6, name="layerwise", unfreeze_depth=2, unfreeze_every=2)
    top = s.groups[-3:]
    assert [g.start_epoch for g in top] == [4, 2, 0]
    assert [g.epochs for g in top] == [(4, 5), (2, 3, 4, 5), (0, 1, 2, 3, 4, 5)]
    assert s.active(0)[-3:] == (False, False, True) and s.active(5)[-3:] == (True, True, True)
    assert s.to_dict()["groups"][-2]["epochs"] == [2, 3, 4, 5]


def test_optimizer_groups_carry_real_lrs_and_frozen_groups_get_zero():
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    groups, s = _schedule(model, epochs=3, name="layerwise", unfreeze_depth=1, unfreeze_every=1, lr_decay=2.0)
    pgs = param_groups(model, groups, s, weight_decay=0.05)
    opt = build_optimizer(OptimConfig(warmup_epochs=0), pgs)
    assert not any("lr_scale" in g for g in opt.param_groups)
    # no weight decay on norms and biases
    for g in opt.param_groups:
        assert (g["weight_decay"] == 0) == g["name"].endswith("/no_decay")
        if g["weight_decay"]:
            assert all(p.ndim > 1 for p in g["params"])
    steps = 2
    sched = build_scheduler(opt, OptimConfig(warmup_epochs=0), s, steps_per_epoch=steps)
    by_group = lambda: {g["layer_group"]: g["lr"] for g in opt.param_groups}  # noqa: E731
    head, below = len(groups) - 1, len(groups) - 2
    assert by_group()[head] == pytest.approx(1e-3) and by_group()[below] == 0.0 and by_group()[0] == 0.0
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    states = []
    for epoch in range(3):
        apply_epoch(model, groups, s, epoch)
        for _ in range(steps):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        states.append({i: any(p in opt.state for p in g["params"]) for i, g in enumerate(opt.param_groups)})
    lg = [g["layer_group"] for g in opt.param_groups]
    # after epoch 0 only the head has optimizer state; after epoch 1 the group below too, and
    # the head's state was kept (same param groups throughout, none added mid-run)
    assert {lg[i] for i, has in states[0].items() if has} == {head}
    assert {lg[i] for i, has in states[1].items() if has} == {head, below}
    assert len(opt.param_groups) == len(pgs)


def test_apply_epoch_freezes_params_and_batchnorm(model):
    groups, s = _schedule(model, name="frozen")
    trainable = apply_epoch(model, groups, s, 0)
    assert trainable == groups[-1].num_params
    assert all(p.requires_grad == (n in groups[-1].param_names) for n, p in model.named_parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in bns)
    _, s_train = _schedule(model, name="frozen", frozen_bn="train")
    apply_epoch(model, groups, s_train, 0)
    assert all(m.training for m in bns)


def test_schedule_table_lists_every_group(model):
    groups, s = _schedule(model, name="layerwise", unfreeze_depth=1)
    table = s.table()
    for g in groups:
        assert g.name in table
    assert table.count("frozen") == len(groups) - 2


def test_every_strategy_is_one_module_and_a_yaml_of_its_own_keys():
    """Everything about a strategy is in its module (config class, plan, registration) and its
    YAML holds only its own knobs, where they differ from the class's defaults (none do now)."""
    import dataclasses

    import yaml

    from src.config import StrategyConfig

    root = Path(__file__).resolve().parents[1]
    assert set(STRATEGIES) == {"bitfit", "frozen", "full", "l2sp", "layerwise", "lpft", "surgical"}
    shared = {f.name for f in dataclasses.fields(StrategyConfig)}
    for name, cls in STRATEGIES.items():
        assert cls.__module__ == f"src.strategies.{name}", name
        assert issubclass(cls.Config, StrategyConfig) and cls.Config().name == name
        conf = yaml.safe_load((root / "conf" / "strategy" / f"{name}.yaml").read_text()) or {}
        assert conf.pop("defaults") == [f"base_{name}", "_self_"], name
        assert not set(conf) & shared, name  # no shared key repeated
        knobs = cls.Config().knobs()  # its own knobs only, none repeating the class's default
        assert set(conf) <= set(knobs) and not [k for k in conf if conf[k] == knobs[k]], name
        lines = (root / "src" / "strategies" / f"{name}.py").read_text().splitlines()
        assert len(lines) < 90, name


def test_a_strategy_s_knobs_are_its_own():
    """Another strategy's knob is an unknown key, not a silently ignored one."""
    from src.config import RunConfig

    with pytest.raises(ConfigError, match="unknown key 'strategy.probe_epochs'"):
        RunConfig.from_dict({"strategy": {"name": "layerwise", "probe_epochs": 3}})
    assert RunConfig.from_dict({"strategy": {"name": "lpft", "probe_epochs": 3}}).strategy.probe_epochs == 3


def test_a_group_joining_late_ramps_up_with_join_warmup():
    from src.training.optim import warmup_cosine

    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    groups, s = _schedule(model, epochs=4, name="lpft", probe_epochs=2)
    steps = 4
    lrs = {}
    for join in (0.0, 1.0):
        cfg = OptimConfig(warmup_epochs=1, join_warmup_epochs=join)
        opt = build_optimizer(cfg, param_groups(model, groups, s, weight_decay=0.0))
        sched = build_scheduler(opt, cfg, s, steps_per_epoch=steps)
        trace = []
        for _ in range(4 * steps):
            trace.append({g["layer_group"]: g["lr"] for g in opt.param_groups})
            opt.step()
            sched.step()
        lrs[join] = trace
    head, stem = len(groups) - 1, 0
    base = [warmup_cosine(t, 16, 4, 0.01) for t in range(16)]
    # the head never joins late: the same in both; the backbone is 0 in the probe epochs
    assert [t[head] for t in lrs[1.0]] == pytest.approx([1e-3 * b for b in base])
    assert all(lrs[j][t][stem] == 0.0 for j in lrs for t in range(8))
    # from epoch 2 on: at once, or ramped over one epoch (4 steps) and equal after it
    assert [lrs[0.0][t][stem] for t in range(8, 16)] == pytest.approx([1e-4 * base[t] for t in range(8, 16)])
    ramp = [lrs[1.0][t][stem] / lrs[0.0][t][stem] for t in range(8, 16)]
    assert ramp == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_frozen_bn_all_keeps_every_batchnorm_on_its_pretrained_statistics(model):
    bns = lambda: [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # noqa: E731
    for mode, training in (("eval", True), ("all", False)):
        groups, s = _schedule(model, name="full", frozen_bn=mode)
        apply_epoch(model, groups, s, 0)
        # every group trains in both; only the statistics differ: batch statistics, or the stored ones
        assert all(p.requires_grad for p in model.parameters())
        assert all(bn.training == training for bn in bns())
    x = torch.randn(4, 3, 32, 32)
    before = [bn.running_mean.clone() for bn in bns()]
    model(x).sum().backward()
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, bns()))
    assert all(bn.weight.grad is not None for bn in bns() if bn.weight is not None)  # scales and shifts still train


# Each strategy's schedule on test_efficientnet (7 groups: stem, 5 stages, head), 4 epochs, head LR
# 1e-3: the trainable parameters that apply_epoch thaws in each epoch and every group's LR, as they
# were when BitFit's parameter rule moved from groups.py/schedule.py into its own module.
PINNED = {
    "frozen": ({}, [1285] * 4, [0.0] * 6 + [1e-3]),
    "full": ({}, [100481] * 4, [1e-4] * 6 + [1e-3]),
    "bitfit": ({}, [4153] * 4, [1e-3] * 7),
    "l2sp": ({}, [100481] * 4, [1e-4] * 6 + [1e-3]),
    "lpft": ({"probe_epochs": 2}, [1285, 1285, 100481, 100481], [1e-4] * 6 + [1e-3]),
    "surgical": ({"surgical_group": 2}, [12213] * 4, [0.0, 0.0, 1e-4, 0.0, 0.0, 0.0, 1e-3]),
    "layerwise": ({"unfreeze_depth": 2, "unfreeze_every": 1}, [1285, 47121, 61305, 61305],
                  [0.0] * 4 + [1e-3 / 2.6**2, 1e-3 / 2.6, 1e-3]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_strategy_thaws_the_pinned_params_per_epoch_at_the_pinned_lrs(name):
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=5)
    knobs, counts, lrs = PINNED[name]
    groups, s = _schedule(model, name=name, **knobs)
    assert [apply_epoch(model, groups, s, epoch) for epoch in range(4)] == counts
    assert [g.lr for g in s.groups] == pytest.approx(lrs, rel=1e-15, abs=0)
    assert s.trainable_params == max(counts)


@dataclass(frozen=True)
class NormsConfig(StrategyConfig):
    name: str = "toy_norms"


class NormScalesOnly(Strategy):
    """A strategy with its own parameter rule, defined here: below the head, only norm scales."""

    name = "toy_norms"
    Config = NormsConfig
    params = "norm_scales"

    def plan(self, num_groups: int, head_lr: float) -> Plan:
        return [(head_lr, 0)] * num_groups

    def trains_param(self, depth: int, param: ParamInfo) -> bool:
        return depth == 0 or (param.ndim == 1 and param.name.endswith(".weight"))  # a 1-D weight: a norm scale


def test_a_strategy_s_own_parameter_rule_is_counted_and_applied_without_touching_the_schedule(model):
    groups = layer_groups(model)
    s = plan_schedule(NormScalesOnly(NormsConfig()), groups, head_lr=1e-3, epochs=2)
    head = set(groups[-1].param_names)
    expected = head | {n for n, p in model.named_parameters() if p.ndim == 1 and n.endswith(".weight")}
    assert len(expected) > len(head) and s.params == "norm_scales"
    assert s.trainable_params == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert apply_epoch(model, groups, s, 0) == s.trainable_params
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    assert [g.num_params for g in s.groups] == [sum(p.numel for p in g.params if p.name in expected) for g in groups]
    assert "param_names" not in s.to_dict()["groups"][0]  # param_groups.json as before: counts, not names


def test_a_rule_that_leaves_parameters_out_must_say_so(model):
    class Unnamed(NormScalesOnly):
        params = "all"

    with pytest.raises(TypeError, match="Unnamed.trains_param leaves parameters out"):
        plan_schedule(Unnamed(NormsConfig()), layer_groups(model), head_lr=1e-3, epochs=2)
