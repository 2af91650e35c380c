"""The annotation readers (preprocess/annotations.py): frame numbers, COCO polygons, video intervals."""

from __future__ import annotations

import pytest

from preprocess.annotations import (
    frame_index_from_file_name,
    in_intervals,
    key_to_index,
    load_coco_masks,
    load_video_annotations,
    polygon_to_mask,
)
from utils.io import save_json_atomic


def test_frame_index_naming():
    assert frame_index_from_file_name("000003_png.rf.5f2e.jpg", "hypernerf") == 2
    assert frame_index_from_file_name("000001.png", "hypernerf") == 0
    assert frame_index_from_file_name("0020_png.rf.x.jpg", "neu3d") == 20
    with pytest.raises(ValueError, match="frame number"):
        frame_index_from_file_name("frame_3.jpg")
    assert key_to_index("000001") == 0 and key_to_index("0007", "neu3d") == 7


def test_polygon_fill_is_inclusive():
    m = polygon_to_mask([1, 1, 3, 1, 3, 2, 1, 2], 4, 5)
    assert m.sum() == 6 and m[1:3, 1:4].all()


def test_coco_reader_or_same_category(tmp_path):
    data = {
        "images": [{"id": 7, "file_name": "000002_png.rf.a.jpg", "height": 6, "width": 8},
                   {"id": 8, "file_name": "000005_png.rf.b.jpg", "height": 6, "width": 8}],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "apple"}],
        "annotations": [
            {"id": 0, "image_id": 7, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]]},
            {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [[5, 3, 6, 3, 6, 4, 5, 4], [0, 5, 7, 5, 7, 5]]},
            {"id": 2, "image_id": 8, "category_id": 2, "segmentation": [[2, 2, 4, 2, 4, 4, 2, 4]]},
        ],
    }
    p = tmp_path / "annotations" / "train" / "_annotations.coco.json"
    save_json_atomic(data, p)
    coco = load_coco_masks(tmp_path)
    assert coco.frame_indices == [1, 4]
    cup = coco.masks[1]["cup"]
    assert cup.shape == (6, 8) and cup.sum() == 8  # two 2x2 squares OR-ed; segmentation[1] ignored
    assert cup[0, 0] and cup[4, 6] and not cup[5, 0]
    assert set(coco.masks[4]) == {"apple"} and coco.masks[4]["apple"].sum() == 9
    assert coco.categories == ["cup", "apple"]
    neu = load_coco_masks(p, dataset="neu3d")
    assert neu.frame_indices == [2, 5]


def test_video_annotations(tmp_path):
    save_json_atomic({"glass cup": {"empty": [[0, 3], [9, 9]], "full": [[4, 8]]}},
                     tmp_path / "annotations" / "video_annotations.json")
    va = load_video_annotations(tmp_path)
    assert va == {"glass cup": {"empty": [(0, 3), (9, 9)], "full": [(4, 8)]}}
    assert in_intervals(3, va["glass cup"]["empty"]) and in_intervals(9, va["glass cup"]["empty"])
    assert not in_intervals(4, va["glass cup"]["empty"])
    save_json_atomic({"x": {"q": [[5, 2]]}}, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="interval"):
        load_video_annotations(tmp_path / "bad.json")


def test_polygon_vertices_are_truncated_like_the_published_reader():
    from preprocess.annotations import polygon_to_mask

    m = polygon_to_mask([1.6, 1.6, 6.7, 1.6, 6.7, 5.9, 1.6, 5.9], 8, 8)
    assert m[1, 1] and m[5, 6] and not m[6, 6] and not m[1, 7]  # int32 truncation: corners (1,1)-(6,5)
