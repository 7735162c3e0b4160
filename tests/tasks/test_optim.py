"""The one optimiser/scheduler configuration: parameter groups, settings validation, the three schedules."""

import math

import pytest
import torch
from torch import nn

from medcl.errors import ConfigError
from medcl.tasks.optim import OptimizerConfig, build_optimizer, parameter_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_no_decay_for_1d_params_multipliers_and_frozen_excluded():
    groups = {g["name"]: g for g in parameter_groups(Toy(), lr=1.0, weight_decay=0.1, lr_multipliers={"encoder": 0.1})}
    assert set(groups) == {"encoder", "encoder/no_decay", "base", "base/no_decay"}
    assert groups["encoder"]["lr"] == pytest.approx(0.1) and groups["encoder"]["weight_decay"] == 0.1
    assert groups["base/no_decay"]["weight_decay"] == 0.0
    counted = sum(p.numel() for g in groups.values() for p in g["params"])
    assert counted == 4 * 4 + 4 + 4 * 2 + 2 + 1  # frozen layer left out


def test_settings_merge_over_task_defaults_and_convert_yaml_numbers():
    defaults = {"lr": 1e-4, "weight_decay": 0.05, "monitor": "val/auroc", "mode": "max"}
    config = OptimizerConfig.resolve({"lr": "5e-4", "warmup_steps": 20.0, "lr_multipliers": {"a": 1}}, defaults)
    assert config == OptimizerConfig(5e-4, 0.05, {"a": 1.0}, "cosine", 20, "val/auroc", "max")
    assert OptimizerConfig.resolve(None, defaults).lr == 1e-4
    plain = config.as_dict()
    assert plain["lr_multipliers"] == {"a": 1.0} and type(plain["warmup_steps"]) is int
    assert OptimizerConfig.resolve(plain) == config  # what a checkpoint records rebuilds the same settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": 1e-3, "betas": [0.9, 0.99]}, r"unknown setting\(s\) betas, learning_rate; known: lr, "),
        ({"schedule": "step"}, r"optimizer\.schedule must be one of \('cosine', 'constant', 'plateau'\)"),
        ({"lr": "fast"}, r"optimizer\.lr: 'fast' is not a valid value"),
        ({"warmup_steps": 2.5}, r"optimizer\.warmup_steps: 2\.5 is not a valid value"),
        ({"lr": 0}, "need lr > 0"),
        ({"mode": "up"}, "optimizer.mode must be 'min' or 'max'"),
        ({"monitor": None}, r"optimizer\.monitor: None is not a valid value"),
        ({"lr_multipliers": {"encoder": -1}}, "lr_multipliers must be >= 0"),
        ([0.1], "optimizer must be a mapping"),
    ],
)
def test_bad_settings_are_one_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        OptimizerConfig.resolve(settings)


def learning_rates(config: OptimizerConfig, total: int, steps: int) -> list[tuple[float, float]]:
    """(base, encoder) learning rates of the first ``steps`` optimiser steps, stepping as Lightning does."""
    built = build_optimizer(Toy(), config, total, task_multipliers={"encoder": 0.1})
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert built["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(steps):
        by_name = {g["name"]: g["lr"] for g in optimizer.param_groups}
        rates.append((by_name["base"], by_name["encoder"]))
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_cosine_follows_the_formula_in_every_group():
    config = OptimizerConfig(lr=2.0, warmup_steps=4)
    total = 14
    expected = [2.0 * s / 4 for s in range(4)]  # transformers' warmup: step 0 at lr 0
    expected += [2.0 * 0.5 * (1 + math.cos(math.pi * (s - 4) / (total - 4))) for s in range(4, total + 1)]
    rates = learning_rates(config, total, total + 1)
    assert [base for base, _ in rates] == pytest.approx(expected, abs=1e-12)
    assert [encoder for _, encoder in rates] == pytest.approx([0.1 * e for e in expected], abs=1e-12)
    assert rates[9][0] == pytest.approx(1.0)  # half way through the cosine: half the peak


def test_warmup_constant_is_flat_after_warmup():
    rates = learning_rates(OptimizerConfig(lr=1.0, schedule="constant", warmup_steps=2), total=100, steps=6)
    assert [base for base, _ in rates] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0])


def test_configured_multipliers_win_over_the_task_ones():
    config = OptimizerConfig(lr=1.0, lr_multipliers={"encoder.weight": 0.5})
    groups = build_optimizer(Toy(), config, 10, task_multipliers={"encoder": 0.1})["optimizer"].param_groups
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name == {"encoder.weight": 0.5, "encoder/no_decay": pytest.approx(0.1), "base": 1.0,
                       "base/no_decay": 1.0}  # fmt: skip


def test_plateau_halves_after_two_validations_without_improvement():
    config = OptimizerConfig(lr=1.0, schedule="plateau", monitor="val/dice_mean", mode="max")
    built = build_optimizer(Toy(), config, total_steps=100, validation_every_n_epochs=3)
    scheduler = built["lr_scheduler"]
    assert scheduler["monitor"] == "val/dice_mean" and scheduler["frequency"] == 3
    plateau = scheduler["scheduler"]
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau) and plateau.mode == "max"
    rates = []
    for dice in (0.5, 0.6, 0.6, 0.59, 0.6, 0.7):  # improves, then 3 validations without improvement
        plateau.step(dice)
        rates.append(built["optimizer"].param_groups[0]["lr"])
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
