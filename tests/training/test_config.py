"""TrainConfig is the one source of train.py's flags: the parser is generated from it, its defaults are the
command line's, state.json records it as before, and a resume compares it field by field."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from training.config import FREE, INVOCATION, SAME, TrainConfig, build_parser
from training.decoder_setup import _warn_resumed_settings

REQUIRED = ["--scenes", "s1", "s2", "--out", "run"]
#: the keys (in order) state.json's "args" held before TrainConfig, when they came from the parsed flags
RECORDED_BEFORE = ["scenes", "tokens_subdir", "features_subdir", "video_features_subdir", "no_video",
                   "train_on_eval_frames", "cache_in_memory", "decoder", "decoder_config", "init", "sync_bn",
                   "init_dpt_from", "lang_dim", "epochs", "batch_size", "lr", "min_lr", "schedule", "warmup_epochs",
                   "weight_decay", "betas", "clip_grad", "w_l1", "w_cos", "w_img", "w_rgb", "w_video", "loss",
                   "save_every", "save_published_pth", "device", "precision", "seed", "threads", "no_val",
                   "val_every", "wandb", "wandb_project", "log_every", "quiet", "verbose"]


def test_one_flag_per_field_with_the_fields_defaults():
    parser = build_parser()
    dests = [a.dest for a in parser._actions if a.dest != "help"]
    assert dests == [f.name for f in dataclasses.fields(TrainConfig)]
    # the command line's defaults are the dataclass's (a flag without a value gets the field's default)
    assert TrainConfig.from_argv(REQUIRED) == TrainConfig(scenes=["s1", "s2"], out="run")
    cfg = TrainConfig.from_argv([*REQUIRED, "--betas", "0.8", "0.9", "--num-workers", "auto", "--resume",
                                 "--lr", "1e-3", "--no-video"])
    assert (cfg.betas, cfg.num_workers, cfg.resume, cfg.lr, cfg.no_video) == ((0.8, 0.9), None, "last", 1e-3, True)
    with pytest.raises(SystemExit):
        TrainConfig.from_argv([*REQUIRED, "--epochs", "0"])  # the field's checked type refuses it


def test_every_field_declares_its_resume_policy():
    for f in dataclasses.fields(TrainConfig):
        policy = f.metadata["resume"]
        assert callable(policy) or policy in (SAME, FREE, INVOCATION), f.name


def test_state_json_records_what_it_recorded_before():
    cfg = TrainConfig.from_argv([*REQUIRED, "--resume", "--stop-at-epoch", "3", "--no-progress", "--debug"])
    rec = cfg.recorded()
    assert list(rec) == RECORDED_BEFORE  # old runs' state.json holds the same keys: they resume alike
    assert rec["betas"] == [0.9, 0.95] and rec["scenes"] == ["s1", "s2"] and rec["warmup_epochs"] == 20


def test_resume_compares_the_fields_that_shape_the_trajectory():
    before = TrainConfig.from_argv([*REQUIRED, "--epochs", "4"]).recorded()
    # more epochs on a constant schedule, another device, logging, workers, validation cadence: nothing to say
    same = TrainConfig.from_argv([*REQUIRED, "--epochs", "8", "--device", "cpu", "--val-every", "5", "-q",
                                  "--num-workers", "2", "--save-every", "1", "--resume"])
    assert same.resume_mismatches(before) == []
    other = TrainConfig.from_argv([*REQUIRED, "--epochs", "8", "--lr", "1e-3", "--betas", "0.5", "0.6", "--seed", "1"])
    assert other.resume_mismatches(before) == ["--lr 4e-05 -> 0.001", "--betas [0.9, 0.95] -> [0.5, 0.6]",
                                               "--seed 42 -> 1"]
    cosine = TrainConfig.from_argv([*REQUIRED, "--schedule", "cosine", "--epochs", "4"])
    assert cosine.resume_mismatches({**before, "schedule": "cosine"}) == []
    assert TrainConfig.from_argv([*REQUIRED, "--schedule", "cosine", "--epochs", "8"]).resume_mismatches(
        {**before, "schedule": "cosine"}) == ["--epochs 4 -> 8"]  # the cosine horizon
    # a field an older run did not record is not compared
    assert other.resume_mismatches({k: v for k, v in before.items() if k not in ("lr", "seed")}) == [
        "--betas [0.9, 0.95] -> [0.5, 0.6]"]


def test_a_resume_with_other_settings_is_one_warning_line(caplog):
    before = TrainConfig.from_argv(REQUIRED).recorded()
    with caplog.at_level(logging.WARNING, logger="train"):
        _warn_resumed_settings({"args": before}, TrainConfig.from_argv([*REQUIRED, "--batch-size", "4", "--w-l1",
                                                                         "0.3"]))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "--batch-size 8 -> 4, --w-l1 0.2 -> 0.3" in lines[0], lines
