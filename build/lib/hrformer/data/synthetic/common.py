"""What the synthetic data generators share: the parameters marker, atomic JSON writes, the cleanup of an earlier
generation, "generate on first use" and the command line.

A generation writes ``root/.synthetic.partial.json`` (its parameters) before its first file and
``root/.synthetic.json`` (the same parameters) after its last one, then removes the partial marker: a complete
dataset is one whose ``.synthetic.json`` holds the requested parameters and that has no partial marker beside it.
Either marker tells a later generation which files an earlier one wrote, so that it removes those and only those.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

MARKER_NAME = ".synthetic.json"
PARTIAL_MARKER_NAME = ".synthetic.partial.json"


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as compact JSON to ``path`` through a ``.tmp`` file renamed over it (never half written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")))
    os.replace(tmp, path)


def read_marker(path: Path) -> dict | None:
    """The parameters in a marker file, or None if it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def has_marker(root: Path) -> bool:
    """Whether ``root`` holds a marker (complete or partial) of some earlier generation."""
    return (root / MARKER_NAME).exists() or (root / PARTIAL_MARKER_NAME).exists()


def is_complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a finished generation with exactly the parameters ``params``."""
    return read_marker(root / MARKER_NAME) == params and not (root / PARTIAL_MARKER_NAME).exists()


def remove_previous(root: Path, remove_outputs: Callable[[Path, dict], None],
                    required_keys: Iterable[str] = ()) -> None:
    """Delete what an earlier (finished or interrupted) generation wrote, and only that.

    For each marker in ``root`` that reads as parameters holding ``required_keys``, ``remove_outputs(root,
    params)`` deletes that generation's files, then the marker itself is deleted.
    """
    for name in (MARKER_NAME, PARTIAL_MARKER_NAME):
        old = read_marker(root / name)
        if old is None or any(key not in old for key in required_keys):
            continue
        remove_outputs(root, old)
        (root / name).unlink(missing_ok=True)


def begin_generation(root: Path, params: dict, *, foreign: Iterable[Path], foreign_what: str,
                     remove_outputs: Callable[[Path, dict], None], required_keys: Iterable[str] = ()) -> None:
    """Prepare ``root`` for a generation with ``params``: refuse data not written by a generator, remove an earlier
    generation (:func:`remove_previous`), create ``root`` and write the partial marker.

    Raises FileExistsError if ``root`` has no marker but one of the ``foreign`` paths exists (``foreign_what``
    names them in the message).
    """
    if not has_marker(root) and any(path.exists() for path in foreign):
        raise FileExistsError(f"{root} already holds {foreign_what} that were not written by this generator; "
                              "refusing to overwrite them")
    remove_previous(root, remove_outputs, required_keys)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / PARTIAL_MARKER_NAME, params)


def finish_generation(root: Path, params: dict) -> None:
    """Mark the generation in ``root`` complete: the marker is written last, then the partial marker goes."""
    write_json_atomic(root / MARKER_NAME, params)
    (root / PARTIAL_MARKER_NAME).unlink(missing_ok=True)


def ensure_generated(root: Path, params: dict, generate: Callable[[], Path]) -> Path:
    """``root`` if it holds a complete generation with ``params`` (:func:`is_complete`), else ``generate()``."""
    return root if is_complete(root, params) else generate()


def run_cli(argv: list[str] | None, *, description: str, default_root: str, num_train: int, num_val: int,
            image_size: int | tuple[int, int], generate: Callable[..., Path], ensure: Callable[..., Path],
            what: str, count_help: tuple[str | None, str | None] = (None, None)) -> None:
    """The command line of a generator: ``--root --num-train --num-val --image-size --seed --force``.

    Calls ``ensure(root, num_train=, num_val=, image_size=, seed=)`` (``generate`` with ``--force``) and prints
    where ``what`` was written and how long it took.  ``image_size`` is the default: an int for square images,
    a (width, height) pair for ``--image-size W H``.  ``count_help``: help texts of ``--num-train`` and
    ``--num-val``.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--root", default=default_root)
    ap.add_argument("--num-train", type=int, default=num_train, help=count_help[0])
    ap.add_argument("--num-val", type=int, default=num_val, help=count_help[1])
    pair = not isinstance(image_size, int)
    if pair:
        ap.add_argument("--image-size", type=int, nargs=2, default=list(image_size), metavar=("W", "H"))
    else:
        ap.add_argument("--image-size", type=int, default=image_size)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even if an identical dataset exists")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    kwargs = dict(num_train=args.num_train, num_val=args.num_val,
                  image_size=tuple(args.image_size) if pair else args.image_size, seed=args.seed)
    root = (generate if args.force else ensure)(args.root, **kwargs)
    print(f"{what} at {root} ({time.perf_counter() - t0:.1f} s)")
