"""Whether an image file is whole: the check that catches truncated files (an interrupted download or copy).

Decoders accept a truncated JPEG with a warning only (libjpeg: "Premature end of JPEG file") and fill the missing
rows with grey, so a cut file trains and validates silently.  A JPEG is whole when an end-of-image marker (FF D9)
follows the header of its first scan: entropy-coded data cannot contain that byte pair (every FF byte in it is
followed by 00 or a restart marker), and the thumbnails that EXIF headers embed, with their own end marker, come
before the first scan.  Bytes after the end marker (camera trailers, motion-photo videos) are allowed.  A PNG is
whole when it holds its IEND chunk.  Other formats are left to the decoder.

:func:`image_problem` reads the file's header and its last few KB (the whole file only when the end marker is not
there); :func:`hrformer.data.common.read_rgb` calls it on every image it decodes.  On the tiny COCO sample it costs
68 us per image against 3.2 ms for OpenCV's decoding (2 %; interleaved, one thread, the 2-core CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
JPEG_SOS = 0xDA
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"   # the IEND chunk: length 0, type, CRC
TAIL_BYTES = 4096   # where the end marker of a whole file lies (unless a trailer follows it)
HEADER_BLOCK = 16384   # JPEG headers are read in blocks of this size


class TruncatedImageError(OSError):
    """An image file that ends before its image data does (see :func:`image_problem`)."""


def image_problem(path: str | Path) -> str | None:
    """Why the JPEG or PNG file at ``path`` is not whole (``"truncated: ..."``), or None when it is (and for other
    formats).  Raises OSError when the file cannot be opened."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_BLOCK)
        if head.startswith(JPEG_SOI):
            return _jpeg_problem(f, size, head)
        if head.startswith(PNG_SIGNATURE):
            return _png_problem(f, size)
    return None


def _jpeg_problem(f, size: int, head: bytes) -> str | None:
    scan_start = _first_scan_data(f, size, head)
    if scan_start is None:
        return "truncated: the file ends before the image data (no start-of-scan marker)"
    if _contains_after(f, size, max(scan_start, size - TAIL_BYTES), JPEG_EOI) or \
            _contains_after(f, size, scan_start, JPEG_EOI):
        return None
    return f"truncated: no JPEG end-of-image marker after the image data ({size} bytes)"


def _first_scan_data(f, size: int, head: bytes) -> int | None:
    """Offset of the entropy-coded data of the first scan (after the SOS segment), None if the file ends first;
    ``head``: the file's first bytes."""
    pos, base, buf = len(JPEG_SOI), 0, head
    while pos + 4 <= size:
        if pos + 4 > base + len(buf):   # read the headers in blocks, not marker by marker
            f.seek(pos)
            base, buf = pos, f.read(HEADER_BLOCK)
        marker = buf[pos - base:pos - base + 4]
        if marker[0] != 0xFF:
            return None   # not a marker where one must be: a damaged header, reported like a truncation
        code = marker[1]
        if code == 0xFF:   # fill byte before a marker
            pos += 1
            continue
        if code == 0x01 or 0xD0 <= code <= 0xD8:   # markers without a length field
            pos += 2
            continue
        if code == JPEG_EOI[1]:
            return None
        end = pos + 2 + int.from_bytes(marker[2:4], "big")
        if code == JPEG_SOS:
            return end if end <= size else None
        pos = end
    return None


def _png_problem(f, size: int) -> str | None:
    start = len(PNG_SIGNATURE)
    if _contains_after(f, size, max(start, size - TAIL_BYTES), PNG_IEND) or _contains_after(f, size, start, PNG_IEND):
        return None
    return f"truncated: no PNG IEND chunk ({size} bytes)"


def _contains_after(f, size: int, offset: int, pattern: bytes) -> bool:
    """Whether ``pattern`` occurs in the file at or after byte ``offset``."""
    if offset >= size:
        return False
    f.seek(offset)
    return pattern in f.read()
