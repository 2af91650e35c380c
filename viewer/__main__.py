"""``python -m viewer --fields <out>``: see :mod:`viewer.app`."""

import sys

from viewer.app import main

if __name__ == "__main__":
    sys.exit(main())
