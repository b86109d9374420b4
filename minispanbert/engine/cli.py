"""The argument parser every ``python -m minispanbert.*`` command uses.

Three differences from a plain ``argparse.ArgumentParser``:

* a usage error is ONE line on stderr, ``error: <what> (see <prog> --help)``, exit code 2 (argparse
  prints the usage block first);
* ``--lr -1e-3`` reads ``-1e-3`` as a value (argparse takes "-1e-3" for an option because its
  negative-number pattern has no exponent), so the value is then checked and refused in words;
* ``--help`` shows every flag's default, and the description is the module docstring's first
  paragraph without reStructuredText backticks.
"""
from __future__ import annotations

import argparse
import re
import sys

# A negative number, integer or float, with an optional exponent: -1, -0.5, -.5, -1e-3, -2.5E+4, -inf, -nan.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def plain_text(doc: str) -> str:
    """The first paragraph of a docstring, without ``literal`` / `role` backticks."""
    first = (doc or "").strip().split("\n\n")[0]
    return re.sub(r"`+([^`]*)`+", r"\1", first)


def _shows_default(action) -> bool:
    """A flag with a default worth printing (not None, not a store_true's False; 0 is printed)."""
    return bool(action.option_strings) and not any(action.default is v for v in (None, False, argparse.SUPPRESS))


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        help_text = action.help or ""
        if "%(default)" in help_text or not _shows_default(action):
            return help_text
        return f"{help_text} (default: %(default)s)" if help_text else "(default: %(default)s)"

    def _format_action(self, action):
        if not action.help and _shows_default(action):
            action.help = "(default: %(default)s)"  # argparse skips the help column of a flag without help
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    def __init__(self, prog: str | None = None, doc: str = "", **kwargs):
        kwargs.setdefault("description", plain_text(doc))
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(prog=prog, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        message = " ".join(message.split())
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def run_or_exit(call):
    """``call()``'s result; a ValueError becomes ``error: <message>`` on stderr and exit status 1,
    a KeyboardInterrupt its message (what is on disk), never a traceback. Every CLI's main uses it."""
    try:
        return call()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt as exc:
        sys.exit(str(exc) or "interrupted")
