"""COCO keypoint AP of a results file: a thin CLI over ``hrformer.evaluation.coco.evaluate_keypoints``
(``hrformer-coco-eval``, or ``python scripts/coco_eval.py`` in a checkout).

    hrformer-coco-eval --ann person_keypoints_val2017.json --results results.json [--out stats.json]

Prints (and with ``--out`` writes) the ten ``COCOeval(..., "keypoints").stats`` as a JSON object with keys
AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl; the numbers are pycocotools' own.  Missing or malformed
inputs: a message naming the file on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hrformer.evaluation.coco import evaluate_keypoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ann", required=True, type=Path, help="COCO keypoint annotations JSON (GT)")
    parser.add_argument("--results", required=True, type=Path, help="COCO keypoint results JSON (a list)")
    parser.add_argument("--out", type=Path, default=None, help="write the ten stats here as JSON")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    args = parser.parse_args(argv)

    try:
        stats = evaluate_keypoints(args.ann, args.results, verbose=args.verbose)
    except (FileNotFoundError, ValueError) as err:
        print(f"coco_eval: error: {err}", file=sys.stderr)
        return 2

    text = json.dumps(stats, indent=2)
    print(text)
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as err:
            print(f"coco_eval: error: cannot write {args.out}: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
