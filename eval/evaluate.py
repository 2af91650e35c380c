"""``python -m eval.evaluate``: the 4D LangSplat evaluation protocol (the runner lives in
:mod:`eval.protocol.runner`; this module is its command-line name)."""

from eval.protocol.runner import main

if __name__ == "__main__":
    main()
