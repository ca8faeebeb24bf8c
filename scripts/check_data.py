#!/usr/bin/env python
"""``hrformer-check-data`` from a checkout: see :mod:`hrformer.tools.check_data`."""

import sys

from hrformer.tools.check_data import main

if __name__ == "__main__":
    sys.exit(main())
