"""List every unreadable or truncated image under some folders, once, before a long training run
(``hrformer-check-data``, or ``python scripts/check_data.py`` in a checkout).

    hrformer-check-data data/coco/images                 # decode every image (as training does), 1 process per core
    hrformer-check-data data/coco/images --quick         # only the end-of-file checks (a truncated copy)
    hrformer-check-data data/cityscapes --out bad.txt    # also write the bad paths, one per line

Files are found recursively by extension (those of :data:`hrformer.data.imagefolder.IMG_EXTENSIONS`, any case).
Each one goes through :func:`hrformer.data.common.read_rgb`, the reader training uses: a missing, undecodable or
truncated (:mod:`hrformer.data.integrity`) file is reported with the reason.  ``--quick`` skips the decoding and
checks only that JPEG and PNG files are whole (seconds for COCO instead of minutes).  Exit code 1 when any file is
bad, 0 otherwise; 2 for a folder that does not exist.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..data.common import read_rgb
from ..data.imagefolder import IMG_EXTENSIONS
from ..data.integrity import image_problem


def image_files(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMG_EXTENSIONS):
                yield Path(root) / name


def problem(path: Path, quick: bool = False) -> str | None:
    """Why ``path`` cannot be trained on, or None."""
    try:
        if quick:
            return image_problem(path)
        read_rgb(path)
    except OSError as err:
        return str(err).removeprefix(f"cannot read image {path}: ")
    return None


def _check(args: tuple[Path, bool]) -> tuple[Path, str | None]:
    return args[0], problem(*args)


def check(folders: list[Path], quick: bool = False, workers: int = 1) -> tuple[int, list[tuple[Path, str]]]:
    """(number of image files, [(path, reason)] of the bad ones in path order)."""
    paths = [p for folder in folders for p in image_files(folder)]
    jobs = [(p, quick) for p in paths]
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_check, jobs, chunksize=64))
    else:
        results = [_check(job) for job in jobs]
    return len(paths), [(p, reason) for p, reason in results if reason is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="folders to scan recursively")
    parser.add_argument("--quick", action="store_true", help="end-of-file checks only, no decoding")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--out", type=Path, default=None, help="write the bad files here, one path per line")
    args = parser.parse_args(argv)
    missing = [f for f in args.folders if not f.is_dir()]
    if missing:
        print(f"check_data: error: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    total, bad = check(args.folders, args.quick, args.workers)
    for path, reason in bad:
        print(f"{path}: {reason}")
    print(f"{len(bad)} of {total} image files unreadable or truncated" + (" (quick check)" if args.quick else ""),
          file=sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(f"{path}\n" for path, _ in bad))
    return 1 if bad else 0
