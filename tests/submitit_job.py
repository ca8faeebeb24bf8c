"""A training run as submitit runs one on a SLURM node: a pickled callable with a ``checkpoint`` method, as
hydra-submitit-launcher's (which resubmits itself with the same arguments)."""

from __future__ import annotations

import sys


class TrainJob:
    def __init__(self, args: list[str]):
        self.args = list(args)

    def __call__(self) -> str:
        from hrformer.train import main

        sys.argv = ["hrformer-train", *self.args]
        main()
        return "trained"

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)
