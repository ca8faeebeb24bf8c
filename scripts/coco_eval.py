#!/usr/bin/env python
"""``hrformer-coco-eval`` from a checkout: see :mod:`hrformer.tools.coco_eval`."""

import sys

from hrformer.tools.coco_eval import main

if __name__ == "__main__":
    sys.exit(main())
