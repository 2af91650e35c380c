"""infer.sh documents its defaults; inference.run refuses partial token caches."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S


def test_infer_sh_help():
    out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "infer.sh"), "--help"], capture_output=True,
                         text=True, check=True, timeout=HANG_GUARD_S).stdout
    for name in ("DECODER", "BACKBONE", "DEVICE", "CHUNK", "WINDOW", "QUERIES"):
        assert name in out



def test_partial_token_cache_is_all_or_nothing():
    """Tokens depend on the whole stream: a cache missing some frames is refused, or replaced by the backbone."""
    from types import SimpleNamespace

    from inference.run import _usable_cache
    from preprocess.token_cache import TokenCacheError

    class FakeCache:
        def __init__(self, have):
            self.have = have

        def validate(self, layers, token_dim, keys, check_files):
            assert check_files and list(keys) == ["000001", "000002"]
            missing = [k for k in keys if k not in self.have]
            if missing:
                raise TokenCacheError(f"token file for {missing} missing")

    decoder = SimpleNamespace(config=SimpleNamespace(layers=(0, 1), dim_in=8))
    refs = [SimpleNamespace(key="000001"), SimpleNamespace(key="000002")]
    full = FakeCache({"000001", "000002"})
    assert _usable_cache(full, refs, decoder, None) is full
    partial = FakeCache({"000001"})
    assert _usable_cache(partial, refs, decoder, "tiny") is None
    with pytest.raises(TokenCacheError, match="must hold every frame"):  # a UserError: one line, exit code 2
        _usable_cache(partial, refs, decoder, None)
