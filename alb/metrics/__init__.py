"""Detection metrics as pure functions on per-image dicts of arrays."""

from alb.metrics.coco import coco_ap
from alb.metrics.kitti import kitti_ap
from alb.metrics.voc import box_iou, voc_ap, voc_aps

__all__ = ["box_iou", "coco_ap", "kitti_ap", "voc_ap", "voc_aps"]
