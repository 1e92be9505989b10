"""The help formatter of the commands: each option's default where it has a meaningful one."""

from __future__ import annotations

import argparse


class Defaults(argparse.HelpFormatter):
    """Like ArgumentDefaultsHelpFormatter, without "(default: None)" on optional values and
    "(default: False)" on switches, and leaving help that names its default alone."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not text or "default" in text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional has no default
        return f"{text} (default: %(default)s)"


def reader_left() -> None:
    """After a BrokenPipeError (``cifarlab ... | head`` stopped reading): send the rest of
    stdout to /dev/null, so neither the output nor Python's exit flush gives a traceback."""
    import os
    import sys
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
