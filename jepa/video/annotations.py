"""The official annotation CSV format, read without torch (the config checks read it before anything is built).

Each non-blank line is ``<video path> <integer label>``, space separated; the label is the last white-space
separated field, so paths may contain spaces.
"""

from collections.abc import Iterator
from pathlib import Path


def annotation_lines(csv_path: str | Path) -> Iterator[tuple[int, str, int]]:
    """``(line number, path as written, label)`` per non-blank line of ``csv_path``.

    Raises:
        ValueError: a line is not ``<path> <integer label>`` (the message names the file and the line).
    """
    with open(csv_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            fields = text.rsplit(maxsplit=1)
            try:
                if len(fields) != 2:
                    raise ValueError
                label = int(fields[1])
            except ValueError:
                raise ValueError(
                    f"{csv_path}:{lineno}: expected '<video path> <integer label>', got {text!r}"
                ) from None
            yield lineno, fields[0], label
