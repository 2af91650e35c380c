"""``python -m eval.tracks`` (the runner lives in :mod:`eval.tracks.run`; the scene table in
:mod:`eval.tracks.scene`, ``python -m eval.tracks.scene``)."""

from eval.tracks.run import main

if __name__ == "__main__":
    main()
