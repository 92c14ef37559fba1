"""The inpainting evaluation: its scores on hand-computed cases, mask validation, and the same masks for
every model (the masks depend on the seed and kind only)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.callbacks.inpainting import InpaintingEvaluation, inpainting_scores
from lightning_gm.errors import ConfigError
from lightning_gm.nn.mpdbm import inpainting_mask


def test_scores_count_missing_pixels_only() -> None:
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    probs = torch.tensor([[0.8, 0.6, 0.0, 1.0]])  # the last two are observed, whatever they say
    missing = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    xent, err = inpainting_scores(x, probs, missing)
    assert xent == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2)
    assert err == pytest.approx(0.5)  # 0.6 > 1/2 predicts 1 where the pixel is 0
    assert inpainting_scores(x, x, torch.ones_like(x))[1] == 0.0


@pytest.mark.parametrize("masks", [["random"], ["middle"], ["random50", "diagonal"]])
def test_unknown_masks_are_config_errors(masks) -> None:
    with pytest.raises(ConfigError, match="InpaintingEvaluation.masks"):
        InpaintingEvaluation(masks=masks)


def test_the_masks_are_a_function_of_the_seed() -> None:
    a = inpainting_mask("random50", 50, (784,), torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global RNG plays no part
    b = inpainting_mask("random50", 50, (784,), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, inpainting_mask("random50", 50, (784,), torch.Generator().manual_seed(4)))
