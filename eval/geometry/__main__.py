"""``python -m eval.geometry``: the runner lives in :mod:`eval.geometry.runner`."""

from eval.geometry.runner import main

if __name__ == "__main__":
    main()
