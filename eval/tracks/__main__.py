"""``python -m eval.tracks`` (the runner lives in :mod:`eval.tracks.run`)."""

from eval.tracks.run import main

if __name__ == "__main__":
    main()
