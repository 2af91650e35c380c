"""Training the published head (``--decoder published``): loss, checkpoints (+ the published .pth), --init, resume,
BatchNorm under DDP, and the error convention."""

import argparse
import json
import logging
import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from model.decoder_io import build_decoder, decoder_config_from_dict, load_decoder, read_published_checkpoint
from model.levels import LEVELS
from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead
from tests.training.helpers import make_tiny_scene
from training.config import TrainConfig
from training.decoder_setup import decoder_config_from_flags, init_from
from training.loss import LossWeights, compute_loss
from training.trainer import main
from utils.cli import UserError, run_cli

PTH_KEYS = {"epoch", "model_state_dict", "optimizer_state_dict", "scaler", "loss", "args"}


def _args(scene, out, *extra, decoder="published-tiny"):
    return ["--scenes", str(scene), "--out", str(out), "--decoder", decoder, "--no-progress", "--threads", "1",
            "--cache-in-memory", *map(str, extra)]


# ---------------------------------------------------------------- --loss published


def _published_reference(lang, rgb, clip, seg, img):
    """The published train.py::compute_loss written out element by element (numpy, float64).
    lang (S, 3, k, H, W) predictions, clip (S, 3, k, H, W) targets, seg (S, 3, H, W) bool, rgb / img (S, 3, H, W)."""
    lang, clip, rgb, img = (np.asarray(x, np.float64) for x in (lang, clip, rgb, img))
    m = np.asarray(seg, np.float64)[:, :, None]  # (S, 3, 1, H, W), as the published seg_maps
    p, t = lang * m, clip * m
    l1 = np.abs(p - t).sum() / p.size  # every element, masked-out zeros included
    sims = []
    S, L, K, H, W = p.shape
    for s in range(S):
        for lvl in range(L):
            for c in range(K):
                for y in range(H):  # cosine along the width axis (dim=-1)
                    a, b = p[s, lvl, c, y], t[s, lvl, c, y]
                    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
                    sims.append(0.0 if na == 0 or nb == 0 else float((a * b).sum() / (na * nb)))
    cos = 1.0 - np.mean(sims)
    d = rgb - img
    return 0.2 * l1 + 0.01 * cos + 0.5 * np.abs(d).mean() + 0.5 * (d * d).mean(), l1, cos


def test_published_loss_matches_an_independent_computation():
    g = torch.Generator().manual_seed(3)
    S, K, H, W = 2, 3, 4, 5
    lang = torch.randn(S, 3, K, H, W, generator=g)
    clip = torch.randn(S, 3, K, H, W, generator=g)
    seg = torch.rand(S, 3, H, W, generator=g) > 0.3
    seg[0, 1, 2] = False  # a fully masked-out row: similarity 0 there, loss 1
    seg[1, 2] = False  # a level without any region
    rgb, img = torch.rand(S, 3, H, W, generator=g), torch.rand(S, 3, H, W, generator=g)
    out = {"lang": {lvl: lang[:, i] for i, lvl in enumerate(LEVELS)}, "rgb": rgb}
    batch = {"lang_target": clip, "lang_mask": seg, "frame": img}
    t = compute_loss(out, batch, LossWeights(), kind="published")
    ref, ref_l1, ref_cos = _published_reference(lang, rgb, clip, seg, img)
    assert t["loss"].item() == pytest.approx(ref, rel=1e-6)
    assert t["l1"].item() == pytest.approx(ref_l1, rel=1e-6) and t["cos"].item() == pytest.approx(ref_cos, rel=1e-6)
    assert abs(compute_loss(out, batch)["loss"].item() - ref) > 1e-3  # our default loss is another one
    # by hand: a 1x1x1x2 map, target (1, 0), prediction (2, 0) with the second pixel masked out:
    # L1 = |2-1| / 2 elements = 0.5 (the masked-out zero counts), cosine along the width = 1 -> loss 0
    one = {"lang_target": torch.tensor([1.0, 5.0]).view(1, 1, 1, 1, 2).expand(1, 3, 1, 1, 2),
           "lang_mask": torch.tensor([True, False]).view(1, 1, 1, 2).expand(1, 3, 1, 2),
           "frame": torch.zeros(1, 3, 1, 2)}
    pred = {"lang": {lvl: torch.tensor([2.0, -7.0]).view(1, 1, 1, 2) for lvl in LEVELS}}
    t = compute_loss(pred, one, kind="published")
    assert t["l1"].item() == pytest.approx(0.5) and t["cos"].item() == pytest.approx(0.0, abs=1e-7)
    assert t["loss"].item() == pytest.approx(0.2 * 0.5)


# ---------------------------------------------------------------- training, checkpoints, resume


def test_config_round_trips_through_decoder_config_from_dict():
    cfg = PublishedDecoderConfig.tiny(dim_in=32, lang_dim=5)
    back = decoder_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(build_decoder(back), PublishedLanguageHead)
    # --decoder published on real StreamVGGT tokens is exactly the released LanguageHead_Multi(2048, 14, 3)
    ds = SimpleNamespace(token_info={"dim": 2048, "layers": [4, 11, 17, 23], "patch_size": 14}, lang_dim=3)
    cfg = TrainConfig.from_argv(["--scenes", "x", "--out", "y", "--decoder", "published"])
    full = decoder_config_from_flags(cfg, ds, video_dim=6)
    assert full == PublishedDecoderConfig() and full.to_dict()["kind"] == "published"
    assert decoder_config_from_dict(full.to_dict()) == full


def test_published_loss_falls_with_video_targets_ignored_and_pth_reads_back(tmp_path, caplog):
    scene = make_tiny_scene(tmp_path / "s", n_frames=4, grid=(2, 2), layout="uniform", video_dim=6)
    with caplog.at_level(logging.WARNING, logger="train"):
        s = main(_args(scene, tmp_path / "run", "--epochs", 40, "--batch-size", 4, "--lr", 5e-3, "--warmup-epochs",
                       0, "--clip-grad", 0, "--weight-decay", 0, "--w-rgb", 0, "--train-on-eval-frames", "--no-val",
                       "--save-every", 20, "--save-published-pth"))
    assert "no time-sensitive decoder" in caplog.text
    first, last = s["history"][0]["train_lang"], s["history"][-1]["train_lang"]
    assert last < first / 5, (first, last)  # measured: 15x in these 40 steps
    ckpt = tmp_path / "run" / "checkpoint_epoch_40"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["decoder_config"]["kind"] == "published"
    folder = load_decoder(tmp_path / "run")
    assert isinstance(folder, PublishedLanguageHead) and folder.config == decoder_config_from_dict(
        state["decoder_config"])
    # the published .pth: published layout, plain data only, identical weights through load_decoder
    pth = tmp_path / "run" / "checkpoint_epoch_40.pth"
    assert (tmp_path / "run" / "checkpoint_epoch_20.pth").is_file()
    raw = torch.load(pth, map_location="cpu", weights_only=True)  # no class needs allowing
    assert set(raw) == PTH_KEYS and raw["epoch"] == 40 and isinstance(raw["args"], dict)
    assert raw["loss"] == pytest.approx(last) and raw["args"]["decoder"] == "published-tiny"
    assert set(raw["optimizer_state_dict"]) == {"state", "param_groups"}
    _, info = read_published_checkpoint(pth)
    assert info["epoch"] == 40 and info["args"]["save_published_pth"] is True
    from_pth = load_decoder(pth)
    ref = load_file(str(ckpt / "model.safetensors"))
    assert set(from_pth.state_dict()) == set(ref) == set(folder.state_dict())
    for k, v in ref.items():
        assert torch.equal(from_pth.state_dict()[k], v) and torch.equal(folder.state_dict()[k], v), k
    # --w-rgb 0: the RGB branch is frozen at its seeded initialisation
    torch.manual_seed(42)
    fresh = build_decoder(folder.config).state_dict()
    assert torch.equal(ref["rgb_encoder.down1.0.weight"], fresh["rgb_encoder.down1.0.weight"])
    assert not torch.equal(ref["lang_encoder.down1.0.weight"], fresh["lang_encoder.down1.0.weight"])


def test_published_resume_is_bit_exact(tmp_path):
    scene = make_tiny_scene(tmp_path / "s", n_frames=6, grid=(2, 2))
    common = ["--batch-size", 2, "--lr", 1e-3, "--warmup-epochs", 1, "--save-every", 2, "--loss", "published"]
    full = main(_args(scene, tmp_path / "full", "--epochs", 4, *common))
    main(_args(scene, tmp_path / "part", "--epochs", 2, *common))
    resumed = main(_args(scene, tmp_path / "part", "--epochs", 4, "--resume", *common))
    assert resumed["global_step"] == full["global_step"] == 8
    for name in ("model.safetensors", "optim.safetensors"):
        a = load_file(str(tmp_path / "full" / "checkpoint_epoch_4" / name))
        b = load_file(str(tmp_path / "part" / "checkpoint_epoch_4" / name))
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs"
        if name == "model.safetensors":  # the BatchNorm statistics are compared too
            assert any(k.endswith("running_mean") for k in a) and any(k.endswith("num_batches_tracked") for k in a)
    assert [h["train_loss"] for h in full["history"]] == [h["train_loss"] for h in resumed["history"]]


def test_published_pth_has_the_same_bytes_on_every_write(tmp_path):
    """torch.save given a path names the zip's inner folder after the file (the atomic write's random temporary
    name): the writer goes through a file object, so two writes of the same epoch are byte-identical."""
    from training.checkpoint import save_published_pth

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    paths = [save_published_pth(tmp_path / name, 7, model, None, loss=0.5, args={"lr": 1e-3})
             for name in ("a", "b")]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    back = torch.load(paths[0], weights_only=True)
    assert back["epoch"] == 7 and torch.equal(back["model_state_dict"]["weight"], model.weight.detach())


# ---------------------------------------------------------------- --init


def _published_style_pth(path, model):
    """A file as the published train.py writes it: args is an argparse.Namespace."""
    torch.save({"epoch": 100, "model_state_dict": model.state_dict(), "optimizer_state_dict": {},
                "scaler": {}, "loss": 0.1, "args": argparse.Namespace(lr=4e-5, cos=True)}, path)


def test_init_from_published_pth_and_clear_errors(tmp_path):
    torch.manual_seed(7)
    src = PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32))
    for m in src.modules():  # non-default BatchNorm statistics, so that buffers are checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.num_batches_tracked.fill_(5)
    pth = tmp_path / "checkpoint_epoch_100.pth"
    _published_style_pth(pth, src)
    target = PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32))
    info = init_from(target, pth)
    assert info["epoch"] == 100
    for k, v in src.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    from model.decoder import DecoderConfig, SemanticBridgingDecoder

    with pytest.raises(UserError, match="holds the published head but this run trains our decoder"):
        init_from(SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32)), pth)
    with pytest.raises(UserError, match="do not match") as e:
        init_from(PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32, lang_dim=5)), pth)
    assert "lang_dim=3" in str(e.value) and "lang_dim=5" in str(e.value)


def test_init_through_train_py_starts_from_the_file(tmp_path):
    scene = make_tiny_scene(tmp_path / "s", n_frames=4, grid=(2, 2))  # token dim 32, lang_dim 3
    torch.manual_seed(1)
    src = PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32))
    pth = tmp_path / "init.pth"
    _published_style_pth(pth, src)
    # lr 0: the parameters stay those of --init (only BatchNorm statistics move in training mode)
    main(_args(scene, tmp_path / "run", "--init", pth, "--epochs", 1, "--batch-size", 2, "--lr", 0,
               "--warmup-epochs", 0, "--no-val"))
    got = load_decoder(tmp_path / "run")
    for k, p in src.named_parameters():
        assert torch.equal(got.state_dict()[k], p.detach()), k


# ---------------------------------------------------------------- errors (utils.cli convention)


def test_expected_failures_print_one_error_line_and_exit_2(tmp_path, capsys):
    scene = make_tiny_scene(tmp_path / "s", n_frames=4, grid=(2, 2))
    cases = [(["--save-published-pth"], "default", "--save-published-pth writes the published head"),
             (["--decoder-config", '{"video_dim": 6}'], "published-tiny", "does not fit the published head"),
             (["--init", tmp_path / "missing.pth"], "published-tiny", "not found")]
    for extra, decoder, message in cases:
        with pytest.raises(SystemExit) as e:
            run_cli(main, _args(scene, tmp_path / "run", "--epochs", 1, *extra, decoder=decoder))
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err


# ---------------------------------------------------------------- BatchNorm under DDP (2 gloo processes)


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from training.batchnorm import prepare_batchnorm
    from training.decoder_setup import wrap_for_training
    from training.distributed import DistInfo

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        info = DistInfo(rank=rank, world_size=world)
        torch.manual_seed(0)
        model = PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32))
        assert prepare_batchnorm(model, False, info) is model
        try:
            prepare_batchnorm(model, True, info)
            refused = ""
        except UserError as e:
            refused = str(e)
        net = wrap_for_training(model, info)
        net.train()
        outs, bn = [], model.lang_encoder.down1[1]
        for step in range(2):
            g = torch.Generator().manual_seed(100 * step + rank)  # every rank its own batch
            toks = [torch.randn(2, 9, 32, generator=g) for _ in range(4)]
            out = net(toks, torch.zeros(2, 3, 28, 28), 5)
            (sum(v.square().mean() for v in out["lang"].values()) + out["rgb"].mean()).backward()
            outs.append(out["lang"]["small"].detach())
        torch.save({"running_mean": bn.running_mean.clone(), "outs": outs, "refused": refused},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batchnorm_is_per_process_under_ddp_and_sync_bn_is_refused_on_cpu(tmp_path, monkeypatch):
    """Two gloo ranks, two training forwards each: every rank normalises with its own batch's statistics, and
    at each forward DDP copies rank 0's running statistics to the others (broadcast_buffers, as published)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    mp.spawn(_ddp_worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    results = {r: torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)}
    torch.manual_seed(0)
    local = PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32)).train()
    bn = local.lang_encoder.down1[1]

    def batch(step, rank):
        g = torch.Generator().manual_seed(100 * step + rank)
        return [torch.randn(2, 9, 32, generator=g) for _ in range(4)], torch.zeros(2, 3, 28, 28)

    def stats_after(seq):  # plain BatchNorm fed these (step, rank) batches in order, from the same start
        local.load_state_dict(start)
        with torch.no_grad():
            for step, rank in seq:
                local.predict(*batch(step, rank), 5)
        return bn.running_mean.clone()

    start = {k: v.clone() for k, v in local.state_dict().items()}
    # rank 1 after step 2: rank 0's statistics of step 1 (broadcast), updated with rank 1's own step-2 batch
    assert torch.allclose(results[1]["running_mean"], stats_after([(0, 0), (1, 1)]), atol=1e-6)
    # rank 0 (which writes the checkpoint): its own batches only
    assert torch.allclose(results[0]["running_mean"], stats_after([(0, 0), (1, 0)]), atol=1e-6)
    assert not torch.allclose(results[0]["running_mean"], results[1]["running_mean"], atol=1e-4)
    # outputs in training mode use each rank's own batch statistics (no synchronisation): as one process alone
    local.load_state_dict(start)
    for rank in (0, 1):
        for step in (0, 1):
            ref = local.predict(*batch(step, rank), 5)["lang"]["small"].detach()
            assert torch.allclose(results[rank]["outs"][step], ref, atol=1e-5), (rank, step)
    for rank in (0, 1):
        assert "--sync-bn needs CUDA" in results[rank]["refused"]
