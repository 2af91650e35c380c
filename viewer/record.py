"""Save what the viewer shows, for a colleague without the pipeline; and play such a file.

Format: viser's own scene serialization (viser 1.1.1 ``ViserServer.get_scene_serializer()``). The serializer
snapshots the current scene (every frame's point cloud with its current colours — the kept queries included —,
the camera frustums and the trajectory) and then records every later scene message with a timestamp; the viewer
steps through all frames with ``insert_sleep(1 / fps)`` between them, so the file replays the video at the
chosen speed with viser's play / pause and time slider. Two containers of the same recording:

* ``.viser`` (``serializer.serialize()``, zstd-compressed msgpack): viser's static client plays it. Either
  ``python -m viewer.record FILE.viser`` (serves viser's bundled client and the file; needs only ``pip install
  viser==1.1.1``), or viser's documented way: ``viser-build-client --output-dir client/``, serve the folder
  holding ``client/`` and the file with any static server (``python -m http.server 8000``), then open
  ``http://127.0.0.1:8000/client/?playbackPath=http://127.0.0.1:8000/FILE.viser``.
* ``.html`` (``serializer.as_html()``): the same client with the recording embedded (base64) in one page;
  opening the file in a browser is all it takes (no Python, no server, works offline).

GUI panels (the image panel, the query list) are not part of viser's scene serialization; the current frame's
picture is shown on its camera frustum instead, so the recording carries it.
Why this and not a point-cloud export (PLY / glTF): it keeps time (the per-frame clouds, playback and
scrubbing), the frustums and the query colours, and opens in a browser with nothing installed (``.html``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from utils.cli import UserError, cli_main


def save_recording(viewer, paths: Sequence[str | Path], fps: float | None = None) -> list[Path]:
    """Record every frame of ``viewer`` (after its pending queries) into each of ``paths`` (``.viser`` or
    ``.html``, chosen by the suffix); returns the paths written."""
    from utils.io import atomic_path

    paths = [Path(p) for p in paths]
    for p in paths:
        if p.suffix.lower() not in (".viser", ".html", ".htm"):
            raise UserError("a recording must end in .viser or .html", p, "name the file *.viser or *.html")
    viewer.wait()
    fps = float(fps or viewer.gui_speed.value or 10.0)
    with viewer.lock:
        cur = viewer.frame
        # one serializer per file: each is consumed by serialize() / as_html()
        serializers = [viewer.server.get_scene_serializer() for _ in paths]
        for i in range(viewer.scene.n):
            viewer.set_frame(i)
            for s in serializers:
                s.insert_sleep(1.0 / fps)
        blobs = [s.as_html().encode("utf-8") if p.suffix.lower() in (".html", ".htm") else s.serialize()
                 for s, p in zip(serializers, paths, strict=True)]
        viewer.set_frame(cur)
    for p, blob in zip(paths, blobs, strict=True):
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p) as tmp:
            Path(tmp).write_bytes(blob)
    return paths


def client_index() -> Path:
    """viser's bundled static client (one self-contained ``index.html``)."""
    try:
        import viser
    except ImportError as e:
        raise UserError(f"the 'viser' package is not installed ({e})", "requirements.txt",
                        "pip install viser==1.1.1") from None
    index = Path(viser.__file__).parent / "client" / "build" / "index.html"
    if not index.is_file():
        raise UserError("viser's static client is missing", index, "reinstall viser (pip install viser==1.1.1)")
    return index


class _PlayHandler(http.server.SimpleHTTPRequestHandler):
    """``/`` -> viser's client; ``/<recording name>`` -> the recording; nothing else."""

    def __init__(self, *a, recording: Path, index: Path, **kw):
        self.recording, self.index = recording, index
        super().__init__(*a, **kw)

    def translate_path(self, path: str) -> str:
        name = path.split("?", 1)[0].lstrip("/")
        if name == self.recording.name:
            return str(self.recording)
        if name in ("", "index.html"):
            return str(self.index)
        return str(self.index.parent / "__missing__")

    def log_message(self, *args) -> None:  # quiet
        pass


def check_port(host: str, port: int) -> None:
    """Refuse a port that something already listens on (viser itself would silently take the next one)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"cannot resolve the host ({e.strerror})", host, "pass --host 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UserError(f"cannot listen on port {port} ({e.strerror or e})", f"{host}:{port}",
                            "the port is in use (another viewer?): pass --port <free port>, or --port 0 for any "
                            "free port") from None


def serve_recording(path: str | Path, host: str = "127.0.0.1", port: int = 8000) -> tuple[http.server.HTTPServer, str]:
    """Start serving viser's client and the ``.viser`` file (in a thread); returns (server, URL to open)."""
    rec = Path(path).resolve()
    if not rec.is_file():
        raise UserError("recording not found", rec, "pass a .viser file written by `python -m viewer --record`")
    check_port(host, port)
    handler = functools.partial(_PlayHandler, recording=rec, index=client_index())
    httpd = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://{host}:{httpd.server_address[1]}/?playbackPath=/{rec.name}"
    return httpd, url


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m viewer.record",
                                description="Play a .viser recording of the viewer in a browser (viser's client).")
    p.add_argument("recording", help="a .viser file (an .html recording opens by itself in a browser)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--debug", action="store_true", help="print tracebacks of expected errors too")
    args = p.parse_args(argv)
    httpd, url = serve_recording(args.recording, args.host, args.port)
    print(f"open {url}  (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.shutdown()
    return 0


if __name__ == "__main__":
    main()
