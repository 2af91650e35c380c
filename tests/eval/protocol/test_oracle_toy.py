"""Oracle fields (ground-truth embedding per pixel) on the hand-built toy scene score ~perfectly."""

from __future__ import annotations

import json

import pytest
import torch

import eval.query.text
from eval.protocol.fields import OurFields, RendersNpyFields
from eval.protocol.report import summarize, to_markdown
from eval.protocol.runner import evaluate_scene, main
from tests.eval import synth


def test_oracle_toy_scene(toy):
    res = evaluate_scene(toy.scene, OurFields(toy.out), toy.enc, device="cpu", overlays_dir=toy.root / "ov")
    ta, ts = res["time_agnostic"], res["time_sensitive"]
    assert set(ta["queries"]) == {"wooden board", "metal spoon", "red apple", "glass cup"}
    assert len(ta["queries"]["wooden board"]["frames"]) == synth.T - 1  # not annotated in frame 2
    assert ta["miou"] >= 0.95 and ta["macc"] >= 0.99
    assert ta["queries"]["metal spoon"]["level_counts"] == {"small": synth.T}
    assert ta["queries"]["wooden board"]["level_counts"] == {"large": synth.T - 1}
    assert ts is not None and ts["acc"] == 1.0 and ts["viou"] >= 0.95
    q = {x["query"]: x for x in ts["queries"]}
    assert [f["pred"] for f in q["empty glass cup"]["frames"]] == [True] * 3 + [False] * 3
    assert [f["label"] for f in q["full glass cup"]["frames"]] == [False] * 3 + [True] * 3
    assert len(list((toy.root / "ov" / "time_agnostic").glob("*.png"))) == 4 * synth.T - 1
    md = to_markdown(summarize([res]))
    assert "| toy |" in md and "empty glass cup" in md


def test_mismatched_text_encoder_scores_low(toy):
    """Sanity: the same fields queried with a shuffled vocabulary (every word on another axis) fail."""
    other = synth.VocabEncoder()
    other(["zzz qqq www"])
    res = evaluate_scene(toy.scene, OurFields(toy.out), other, device="cpu")
    assert res["time_agnostic"]["miou"] < 0.5


def test_renders_layout_and_cli(toy, tmp_path, monkeypatch):
    res = evaluate_scene(toy.scene, RendersNpyFields(toy.dirs, toy.vdir), toy.enc, device="cpu",
                         time_sensitive=True)
    assert res["time_agnostic"]["miou"] >= 0.95 and res["time_sensitive"]["acc"] == 1.0
    # the CLI builds its encoder through eval.query.text.text_encoder_from_args: substitute the toy vocabulary encoder
    monkeypatch.setattr(eval.query.text, "text_encoder_from_args", lambda *a, **k: toy.enc)
    qe = tmp_path / "q.json"  # precomputed state-query embeddings path
    qe.write_text(json.dumps({q: toy.enc([q])[0].tolist() for q in ("empty glass cup", "full glass cup")}))
    summary = main(["--scene", str(toy.scene), "--renders", ",".join(map(str, toy.dirs)),
                    "--video-renders", str(toy.vdir), "--hash-text", "--video-query-embeddings", str(qe),
                    "--device", "cpu", "--overlays", "--out", str(tmp_path / "res")])
    data = json.loads((tmp_path / "res" / "results.json").read_text())
    assert (tmp_path / "res" / "results.md").read_text().startswith("# Evaluation results")
    assert data["overall"]["n_scenes"] == 1 and data["scenes"][0]["scene"] == "toy"
    assert summary["overall"]["acc"] == data["overall"]["acc"] == 1.0
    assert data["overall"]["miou"] >= 0.95
    assert any((tmp_path / "res" / "overlays" / "toy" / "time_sensitive").glob("*.png"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(toy):
    a = evaluate_scene(toy.scene, OurFields(toy.out), toy.enc, device="cpu")
    b = evaluate_scene(toy.scene, OurFields(toy.out), toy.enc, device="cuda")
    assert a["time_agnostic"]["miou"] == pytest.approx(b["time_agnostic"]["miou"], abs=1e-4)
    assert a["time_sensitive"]["acc"] == b["time_sensitive"]["acc"]
    assert a["time_sensitive"]["viou"] == pytest.approx(b["time_sensitive"]["viou"], abs=1e-4)


def test_fields_at_lower_resolution_are_resized(toy):
    """Fields at half the annotation resolution: relevancy and the video field are resized to the GT size."""
    from eval.protocol.fields import FieldSource

    ours = OurFields(toy.out)

    class Half(FieldSource):
        def frame_indices(self):
            return ours.frame_indices()

        def has_video(self):
            return True

        def semantic(self, i):
            return ours.semantic(i)[:, ::2, ::2]

        def video(self, i):
            return ours.video(i)[::2, ::2]

    res = evaluate_scene(toy.scene, Half(), toy.enc, device="cpu")
    frame = res["time_agnostic"]["queries"]["red apple"]["frames"][0]
    assert frame["iou"] >= 0.9
    assert res["time_agnostic"]["miou"] >= 0.9 and res["time_sensitive"]["acc"] == 1.0
