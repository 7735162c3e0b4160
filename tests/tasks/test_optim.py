import math

import pytest
import torch
from torch import nn

from medcl.errors import ConfigError
from medcl.tasks.optim import build_optimizer, parameter_groups


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


def test_warmup_cosine_schedule_values():
    config = build_optimizer(
        Toy(),
        lr=1.0,
        weight_decay=0.0,
        lr_multipliers=None,
        schedule="cosine",
        warmup_steps=2,
        total_steps=10,
        monitor="m",
    )
    scheduler = config["lr_scheduler"]["scheduler"]
    factors = [scheduler.lr_lambdas[0](s) for s in (0, 1, 2, 6, 10)]
    assert factors == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi * 0.5)), 0.0])


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="schedule"):
        build_optimizer(
            Toy(),
            lr=1.0,
            weight_decay=0.0,
            lr_multipliers=None,
            schedule="step",
            warmup_steps=0,
            total_steps=1,
            monitor="m",
        )
