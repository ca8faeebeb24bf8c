#!/usr/bin/env python
"""``hrformer-convert`` from a checkout: see :mod:`hrformer.tools.convert_checkpoint`."""

import sys

from hrformer.tools.convert_checkpoint import convert, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
