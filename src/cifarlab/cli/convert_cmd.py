"""``cifarlab convert OLD.pt [-o NEW.pt]``: make a trusted older checkpoint load safely.

Checkpoints load with ``weights_only=True``, so a file runs no code when opened. Files
written by cifarlab before that (format /1) pickled numpy objects and need a full unpickle
once; this command does it only on the file the user names, after a warning.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="rewrite an older checkpoint you trust so it loads without pickle code",
                              description="Rewrite a checkpoint written by an earlier cifarlab (full pickle) in "
                                          "the current format, which loads with weights_only=True. Unpickling "
                                          "the old file runs any code it holds: convert only files you trust.")
    p.add_argument("checkpoint", metavar="OLD.pt", nargs="+",
                   help="checkpoint file(s), or run folder(s) (converts best.pt and last.pt)")
    p.add_argument("-o", "--out", default=None, metavar="NEW.pt",
                   help="write here instead of replacing the file (one checkpoint file only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.engine import convert_checkpoint
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
