"""The MMDetection adapter (optional: scripts/install_mmdet.sh). Skipped where mmdet or
mmcv's compiled ops do not import. The generic contract (fields, shapes, offsets) runs on
the mmdet_*.yaml models in tests/test_detectors.py."""

import importlib.util

import pytest
import torch

if any(importlib.util.find_spec(m) is None for m in ("mmdet", "mmcv")) or importlib.util.find_spec("mmcv._ext") is None:
    pytest.skip("mmdet with mmcv's compiled ops is not installed (scripts/install_mmdet.sh)", allow_module_level=True)

from alb.errors import UserError  # noqa: E402
from alb.models.mmdet_adapter import MMDetDetector  # noqa: E402

CONFIGS = {"dense": "retinanet/retinanet_r18_fpn_1x_coco.py", "two_stage": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
           "score_factor": "atss/atss_r50_fpn_1x_coco.py"}


def distinct_class_vectors(model: MMDetDetector) -> None:
    """Random init gives near-constant class scores (the prior bias): spread them so that
    a box given another candidate's vector would show."""
    with torch.no_grad():
        for name, module in model.head.named_modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear) and name.endswith("_cls"):  # the classifier
                torch.nn.init.normal_(module.weight, std=0.05)
                torch.nn.init.normal_(module.bias, std=1.0)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    m = MMDetDetector(3, config=CONFIGS[request.param], image_size=96, score_threshold=0.0, max_detections=10)
    distinct_class_vectors(m)
    return m.eval()


def images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 80, 100, generator=g), torch.rand(3, 96, 64, generator=g)]


def test_al_outputs_leave_mmdetections_own_results_unchanged(model):
    ours, theirs = model.detect(images()), model.detect(images(), al_outputs=False)
    for a, b in zip(ours, theirs):
        assert len(a["scores"]) > 0
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
        assert torch.equal(a["labels"], b["labels"])


def test_each_box_carries_its_candidates_class_vector(model):
    for det in model.detect(images()):
        probs, labels, scores = det["box_probs"], det["labels"], det["scores"]
        width = 3 + (model.probs_kind == "softmax")
        assert probs.shape == (len(scores), width)
        assert det["box_features"].shape == (len(scores), model.feature_dim)
        if model.probs_kind == "softmax":
            torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
        if model.score_is_probability:
            torch.testing.assert_close(probs[torch.arange(len(labels)), labels], scores)
        else:  # ATSS: score = p * centerness <= p
            assert torch.all(scores <= probs[torch.arange(len(labels)), labels] + 1e-6)
    assert model.score_is_probability == ("atss" not in model.head.__class__.__name__.lower())


def test_the_wrapped_functions_are_restored_after_detect(model):
    import mmdet.models.dense_heads.base_dense_head as base_dense_head
    import mmdet.models.roi_heads.bbox_heads.bbox_head as bbox_head
    from mmdet.models.layers import multiclass_nms
    from mmdet.models.utils import filter_scores_and_topk

    model.detect(images())
    assert base_dense_head.filter_scores_and_topk is filter_scores_and_topk
    assert bbox_head.multiclass_nms is multiclass_nms
    assert "_bbox_post_process" not in vars(model.head) and "_predict_by_feat_single" not in vars(model.head)


def test_losses_are_finite_scalars_and_train():
    torch.manual_seed(0)
    m = MMDetDetector(2, config=CONFIGS["dense"], image_size=64).train()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[5.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([0])}]
    imgs = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-3)
    history = []
    for _ in range(8):
        losses = m.losses(imgs, targets)
        assert set(losses) == {"loss_cls", "loss_bbox"} and all(v.dim() == 0 for v in losses.values())
        loss = sum(losses.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert history[-1] < history[0]


def test_an_unknown_config_is_a_clear_error():
    with pytest.raises(UserError, match="no_such_config.py"):
        MMDetDetector(2, config="retinanet/no_such_config.py")
