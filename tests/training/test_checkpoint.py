import torch

from model.decoder import DecoderConfig, SemanticBridgingDecoder
from training.checkpoint import (
    flatten_optimizer_state,
    load_checkpoint,
    load_decoder,
    resolve_checkpoint_folder,
    save_checkpoint,
    unflatten_optimizer_state,
)
from training.schedule import param_groups


def _trained(seed=0):
    torch.manual_seed(seed)
    cfg = DecoderConfig.tiny(dim_in=32, rgb=False)
    model = SemanticBridgingDecoder(cfg)
    opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-3, betas=(0.9, 0.95))
    toks = [torch.randn(1, 9, 32) for _ in range(4)]
    for _ in range(2):
        out = model(toks, torch.rand(1, 3, 28, 28), 5)
        loss = sum(v.square().mean() for v in out["lang"].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cfg, model, opt


def test_optimizer_state_round_trip():
    _, _, opt = _trained()
    sd = opt.state_dict()
    tensors, skeleton = flatten_optimizer_state(sd)
    assert all(torch.is_tensor(v) for v in tensors.values())
    back = unflatten_optimizer_state(tensors, skeleton)
    assert back["param_groups"] == sd["param_groups"]
    assert set(back["state"]) == set(sd["state"])
    for pid, entry in sd["state"].items():
        for name, v in entry.items():
            assert torch.equal(back["state"][pid][name], v)


def test_save_load_resume_state_and_last_pointer(tmp_path):
    cfg, model, opt = _trained()
    state = {"decoder_config": cfg.to_dict(), "global_step": 2}
    p1 = save_checkpoint(tmp_path, 1, model, opt, state)
    p2 = save_checkpoint(tmp_path, 2, model, opt, state)
    save_checkpoint(tmp_path, 2, model, opt, state)  # overwriting an existing checkpoint is fine
    assert p1.name == "checkpoint_epoch_1" and (p2 / "model.safetensors").is_file()
    assert resolve_checkpoint_folder(tmp_path) == p2
    assert sorted(x.name for x in tmp_path.iterdir()) == ["checkpoint_epoch_1", "checkpoint_epoch_2", "last"]
    model_sd, optim_sd, info = load_checkpoint(tmp_path)
    assert info["epoch"] == 2 and info["global_step"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(model_sd[k], v)
    _, fresh_model, _ = _trained(seed=1)
    fresh_opt = torch.optim.AdamW(param_groups(fresh_model, 1e-4), lr=1e-3)
    fresh_opt.load_state_dict(optim_sd)
    assert fresh_opt.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    dec = load_decoder(p1)
    assert not dec.training and dec.config == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(dec.state_dict()[k], v)
    assert not (p2 / "optim.safetensors").read_bytes().startswith(b"\x80")  # not a pickle
