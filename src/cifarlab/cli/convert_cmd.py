"""``cifarlab convert OLD.pt [-o NEW.pt]``: make an older checkpoint load with the plain safe loader.

Checkpoints load with ``weights_only=True``, so a file runs no code when opened. Files
written by cifarlab before that (format /1) pickled numpy RNG state; this command reads them
with the safe loader allowed exactly those numpy types (no code runs; a file asking for
anything else is refused) and writes them in the current format.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="rewrite an older checkpoint in the current format",
                              description="Rewrite a checkpoint written by an earlier cifarlab (format /1, "
                                          "numpy RNG state pickled) in the current format. The old file is "
                                          "read without running any code it holds: only numpy arrays, "
                                          "scalars and dtypes are allowed besides tensors and plain values, "
                                          "and a file asking for anything else is refused.")
    p.add_argument("checkpoint", metavar="OLD.pt", nargs="+",
                   help="checkpoint file(s), or run folder(s) (converts best.pt and last.pt)")
    p.add_argument("-o", "--out", default=None, metavar="NEW.pt",
                   help="write here instead of replacing the file (one checkpoint file only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.inference import convert_checkpoint
    from cifarlab.errors import ConfigError
    files = [f for item in args.checkpoint for f in _files(Path(item))]
    if args.out and len(files) != 1:
        raise ConfigError(f"-o names one output file but {len(files)} checkpoints were given; drop -o to "
                          f"convert them in place")
    for src in files:
        out, converted = convert_checkpoint(src, args.out)
        print(f"{'converted' if converted else 'already in the current format:'} {src}"
              + (f" -> {out}" if out != src else ""))
    return 0


def _files(path):
    """A run folder's best.pt and last.pt; a file as given (a missing one fails in convert)."""
    if path.is_dir():
        found = [path / n for n in ("best.pt", "last.pt") if (path / n).is_file()]
        return found or [path]  # an empty folder: let convert say what is missing
    return [path]
