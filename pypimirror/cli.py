"""The ``pypimirror`` command line: the composition root for one-shot commands.

Expected failures (bad configuration, unreachable database or upstream, a refused sync)
are :class:`~pypimirror.errors.PyPIMirrorError`\\ s: they print one line
``pypimirror: error: …`` and exit 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import yaml

from pypimirror import __version__
from pypimirror.config import Config, load_config
from pypimirror.errors import PyPIMirrorError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2

DEFAULT_CONFIG = "config.yaml"


def _config_path(given: str | None) -> str:
    """``-c`` wins, then ``$PYPIMIRROR_CONFIG``, then ``config.yaml`` in the working directory."""
    return given or os.environ.get("PYPIMIRROR_CONFIG") or DEFAULT_CONFIG


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypimirror",
        description="A partial PyPI mirror: the whole index, the popular files.",
    )
    parser.add_argument("--version", action="version", version=f"pypimirror {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help=f"configuration file (default: $PYPIMIRROR_CONFIG, then {DEFAULT_CONFIG})",
        )
        return command

    add_command("check-config", "validate the configuration and print the effective settings")
    return parser


def _check_config(config: Config) -> int:
    """Print the effective configuration, secrets masked, as YAML."""
    sys.stdout.write(yaml.safe_dump(config.to_display_dict(), sort_keys=False))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(_config_path(args.config))
        if args.command == "check-config":
            return _check_config(config)
        raise AssertionError(f"unhandled command {args.command!r}")
    except PyPIMirrorError as exc:
        print(f"pypimirror: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_FAILED
