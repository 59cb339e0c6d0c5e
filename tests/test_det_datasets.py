"""Detection readers on tiny fixtures written in each format, including malformed files."""

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from alb.datasets.coco import read_coco
from alb.datasets.kitti import read_kitti
from alb.datasets.shapes import read_shapes
from alb.datasets.voc import read_voc
from alb.errors import UserError

XML = """<annotation>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object>
    <name>cat</name>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>{xmax}</xmax><ymax>20</ymax></bndbox>
  </object>
  <object>
    <name>unicorn</name>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>
  </object>
</annotation>
"""


def write_voc(root, year="VOC2007", stems=("000001", "000002"), image_set="trainval", xml=None):
    base = root / "VOCdevkit" / year
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate(stems):
        Image.new("RGB", (40, 30), (k * 40, 90, 200)).save(base / "JPEGImages" / f"{stem}.jpg")
        text = xml if xml is not None and k == len(stems) - 1 else XML.format(difficult=k % 2, xmax=30)
        (base / "Annotations" / f"{stem}.xml").write_text(text)
    (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{s}\n" for s in stems))


def voc(root, **kwargs):
    return read_voc(str(root), pool_sets=[["VOC2007", "trainval"]], test_sets=[["VOC2007", "test"]],
                    classes=["dog", "cat"], **kwargs)


def test_voc_reader_reads_boxes_labels_difficult_and_ids(tmp_path):
    write_voc(tmp_path)
    write_voc(tmp_path, stems=("000003",), image_set="test")
    data = voc(tmp_path)
    assert data.pool.ids == ["VOC2007/000001", "VOC2007/000002"]
    first = data.pool.annotations[0]
    np.testing.assert_array_equal(first["boxes"], [[2, 3, 30, 20]])  # the unknown class is skipped
    np.testing.assert_array_equal(first["labels"], [1])
    assert list(data.pool.annotations[1]["difficult"]) == [True]
    assert data.pool.image(0).shape == (3, 30, 40)
    assert data.metric_names() == ["map", "map_area", "ap_dog", "ap_cat"]


@pytest.mark.parametrize("xml,expected", [
    ("<annotation><object><name>cat</name>", "line 1"),
    (XML.format(difficult=0, xmax="abc"), "line 6"),
    (XML.format(difficult=0, xmax=1), "xmax < xmin"),
    (XML.format(difficult=2, xmax=30), "<difficult> must be 0 or 1"),
    ("<annotation>\n<object><name>cat</name></object>\n</annotation>", "without a <bndbox>"),
])
def test_voc_reader_names_the_file_and_line_of_a_malformed_annotation(tmp_path, xml, expected):
    write_voc(tmp_path, xml=xml)
    write_voc(tmp_path, stems=("000003",), image_set="test")
    with pytest.raises(UserError) as err:
        voc(tmp_path)
    assert "000002.xml" in str(err.value) and expected in str(err.value)


def test_voc_reader_missing_pieces(tmp_path):
    with pytest.raises(UserError, match="not a VOCdevkit"):
        voc(tmp_path)
    write_voc(tmp_path)
    with pytest.raises(UserError, match="test.txt"):
        voc(tmp_path)
    write_voc(tmp_path, stems=("000003",), image_set="test")
    (tmp_path / "VOCdevkit/VOC2007/Annotations/000003.xml").unlink()
    with pytest.raises(UserError, match="000003.xml does not exist"):
        voc(tmp_path)


def test_shapes_is_generated_once_deterministically_in_voc_layout(tmp_path):
    kwargs = dict(n_pool=12, n_test=5, image_size=64, min_size=8, max_size=24, difficult_size=10)
    a = read_shapes(str(tmp_path / "a"), **kwargs)
    b = read_shapes(str(tmp_path / "b"), **kwargs)
    assert len(a.pool) == 12 and len(a.test) == 5 and a.class_names == ["circle", "square", "triangle", "cross"]
    for x, y in zip(a.pool.annotations + a.test.annotations, b.pool.annotations + b.test.annotations):
        np.testing.assert_array_equal(x["boxes"], y["boxes"])
        np.testing.assert_array_equal(x["labels"], y["labels"])
    folder = next((tmp_path / "a").iterdir())
    assert (folder / "SHAPES" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert len(list((folder / "SHAPES" / "Annotations").glob("*.xml"))) == 17
    boxes = np.concatenate([x["boxes"] for x in a.pool.annotations])
    assert boxes.min() >= 1 and boxes.max() <= 64 and np.all(boxes[:, 2:] >= boxes[:, :2])
    other = read_shapes(str(tmp_path / "a"), **{**kwargs, "seed": 1})  # another seed, another folder
    assert len(list((tmp_path / "a").iterdir())) == 2
    assert any(len(x["labels"]) != len(y["labels"]) or not np.array_equal(x["boxes"], y["boxes"])
               for x, y in zip(a.pool.annotations, other.pool.annotations))


KITTI_LINES = ["Car 0.00 0 -1.58 10.00 20.00 60.00 80.00 1.6 1.7 4.0 1.0 1.5 20.0 -1.6",
               "Pedestrian 0.50 0 0.2 70.00 10.00 80.00 30.00 1.8 0.6 0.8 2.0 1.5 10.0 0.1",
               "DontCare -1 -1 -10 90.00 5.00 99.00 15.00 -1 -1 -1 -1000 -1000 -1000 -10",
               "Van 0.00 0 -1.58 1.00 1.00 9.00 9.00 1.6 1.7 4.0 1.0 1.5 20.0 -1.6"]


def write_kitti(root, n=4, lists=True, bad_line=None):
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "label_2").mkdir(parents=True)
    stems = [f"{i:06d}" for i in range(n)]
    for stem in stems:
        Image.new("RGB", (100, 90)).save(root / "training" / "image_2" / f"{stem}.png")
        lines = KITTI_LINES + ([bad_line] if bad_line and stem == stems[-1] else [])
        (root / "training" / "label_2" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if lists:
        (root / "ImageSets").mkdir()
        (root / "ImageSets" / "train.txt").write_text("000000\n000002\n")
        (root / "ImageSets" / "val.txt").write_text("000001\n000003\n")


def test_kitti_reader_split_classes_dontcare_and_difficulty(tmp_path):
    write_kitti(tmp_path)
    data = read_kitti(str(tmp_path))
    assert data.pool.ids == ["000000", "000002"] and data.test.ids == ["000001", "000003"]
    ann = data.pool.annotations[0]
    np.testing.assert_array_equal(ann["labels"], [0, 1])  # Van is not a chosen class
    assert list(ann["difficult"]) == [False, True]  # the pedestrian is 20 px high and truncated 0.5
    np.testing.assert_array_equal(ann["ignore_regions"], [[90, 5, 99, 15]])
    assert data.evaluation == "kitti" and data.train_difficult


def test_kitti_reader_without_lists_warns_and_draws_a_seeded_split(tmp_path):
    write_kitti(tmp_path, n=10, lists=False)
    with pytest.warns(UserWarning, match="seeded split"):
        data = read_kitti(str(tmp_path))
    assert len(data.pool) == 5 and len(data.test) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_kitti(str(tmp_path)).pool.ids == data.pool.ids


def test_kitti_reader_names_file_and_line_of_a_bad_label(tmp_path):
    write_kitti(tmp_path, bad_line="Car 0.0 0 1.0 10 20 60")
    with pytest.raises(UserError, match=r"000003.txt, line 5: expected 15 fields"):
        read_kitti(str(tmp_path))


def write_coco(root, val_text=None):
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        Image.new("RGB", (50, 40)).save(root / split / "a.jpg")
        data = {"images": [{"id": 7, "file_name": "a.jpg", "width": 50, "height": 40}],
                "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
                "annotations": [{"id": 1, "image_id": 7, "category_id": 18, "bbox": [5, 6, 10, 20], "iscrowd": 0},
                                {"id": 2, "image_id": 7, "category_id": 3, "bbox": [1, 1, 30, 30], "iscrowd": 1}]}
        text = val_text if split == "val2017" and val_text is not None else json.dumps(data, indent=1)
        (root / "annotations" / f"instances_{split}.json").write_text(text)


def test_coco_reader_renumbers_categories_and_keeps_crowd(tmp_path):
    write_coco(tmp_path)
    data = read_coco(str(tmp_path))
    assert data.class_names == ["car", "dog"] and data.pool.ids == ["train2017/7"]
    ann = data.test.annotations[0]
    np.testing.assert_array_equal(ann["boxes"], [[5, 6, 15, 26], [1, 1, 31, 31]])
    np.testing.assert_array_equal(ann["labels"], [1, 0])
    assert list(ann["crowd"]) == [False, True]


def test_coco_reader_names_the_line_of_malformed_json(tmp_path):
    write_coco(tmp_path, val_text='{\n "images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(UserError, match=r"instances_val2017.json, line 3"):
        read_coco(str(tmp_path))
