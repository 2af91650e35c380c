"""Whether the Hugging Face Hub can be tried at all, decided in well under a second.

Offline, ``huggingface_hub`` retries with back-off for about a minute before failing; our loaders ask here first
and, when the Hub cannot be reached, fail at once with the sentence that names the local file to put in place.
``HF_HUB_OFFLINE=1`` is honoured; otherwise one DNS lookup of the Hub's host (a few hundred milliseconds at most)
decides, and the library's own timeouts are shortened for the rare case where the name resolves but nothing
answers.
"""

from __future__ import annotations

import functools
import os
import socket

HUB_HOST = "huggingface.co"


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or the Hub's host name does not resolve."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        socket.getaddrinfo(HUB_HOST, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)
