"""CALD's views (flip, cut-out, 0.8x, 5-degree rotation) and their way back to the image's frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from alb.models.views import cutout, make_view, rotate_back
from conftest import synthetic_det_records


def test_flip_and_scale_map_boxes_back_exactly():
    image = torch.rand(3, 100, 150)
    flipped, back = make_view(image, "flip")
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(back(torch.tensor([[10.0, 5.0, 30.0, 25.0]])), torch.tensor([[120.0, 5.0, 140.0, 25.0]]))
    scaled, back = make_view(image, "scale")
    assert scaled.shape == (3, 80, 120)
    assert torch.allclose(back(torch.tensor([[8.0, 4.0, 24.0, 20.0]])), torch.tensor([[10.0, 5.0, 30.0, 25.0]]))


@pytest.mark.parametrize("box", [[10.0, 10.0, 12.0, 12.0], [480.0, 280.0, 482.0, 282.0], [240.0, 140.0, 242.0, 142.0]])
def test_rotate_back_undoes_torchvisions_rotation(box):
    """A small box turned by torchvision (5 degrees, canvas expanded) comes back to where it was."""
    image = torch.rand(3, 300, 500)
    turned = TF.rotate(tv_tensors.BoundingBoxes(torch.tensor([box]), format="XYXY", canvas_size=(300, 500)), 5.0,
                       expand=True)
    canvas = make_view(image, "rotate")[0].shape[-2:]
    back = rotate_back(turned.as_subclass(torch.Tensor), (300, 500), canvas, 5.0)[0]
    assert torch.allclose(back, torch.tensor(box), atol=2.0)  # torchvision's canvas rounding: within 2 px


def test_cutout_blanks_beside_the_detections_and_repeats_for_a_seed():
    image = torch.ones(3, 200, 200)
    boxes = torch.tensor([[20.0, 20.0, 120.0, 120.0], [130.0, 30.0, 190.0, 90.0]])
    first = cutout(image, boxes, torch.Generator().manual_seed(3))
    again = cutout(image, boxes, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and not torch.equal(first, image)
    blank = first[0] == 0
    assert 0 < blank.float().mean() <= 2 * 0.2 * 0.2  # at most two rectangles of at most 20% x 20%
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    covered = torch.stack([blank[int(b[1]):int(b[3]), int(b[0]):int(b[2])].sum() for b in boxes]) / areas
    assert float(covered.max()) <= 2 * 0.4 + 1e-6  # each rectangle covers a detection by at most 40%
    assert torch.equal(cutout(image, torch.zeros(0, 4), torch.Generator().manual_seed(3)), image)


def test_cald_averages_its_views_and_flip_alone_is_the_previous_reading():
    from alb.select.consistency import cald_consistency
    from alb.strategies.cald import CALD
    records = synthetic_det_records(30, seed=4)
    kind, views = records.meta["probs_kind"], ("flip", "cutout", "scale", "rotate")
    each = [cald_consistency(records["boxes"], records["box_probs"], records["scores"], records["offsets"],
                             records[f"{v}_boxes"], records[f"{v}_box_probs"], records[f"{v}_scores"],
                             records[f"{v}_offsets"], kind, 1.3) for v in views]
    chosen = {}

    def spy(consistency, candidate, reference, budget, ratio, update):
        chosen["consistency"] = consistency
        return np.arange(budget)

    import alb.strategies.cald as module
    original = module.cald_select
    module.cald_select = spy
    try:
        CALD().select(records, records, 5, np.random.default_rng(0))
        np.testing.assert_allclose(chosen["consistency"], np.mean(each, axis=0))
        CALD(views=["flip"]).select(records, records, 5, np.random.default_rng(0))
        np.testing.assert_allclose(chosen["consistency"], each[0])
    finally:
        module.cald_select = original
    assert {"rotate_boxes", "cutout_scores", "scale_box_probs", "flip_labels"} <= set(CALD().fields)
    with pytest.raises(ValueError, match="views"):
        CALD(views=["blur"])
