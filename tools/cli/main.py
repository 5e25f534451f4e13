"""`splitrt <verb>`: the one command-line entry point.

Each verb lives in ``tools/cli/<verb>.py`` with two functions: ``configure(parser)`` adds
its flags (cheap: no heavy imports at module level) and ``main(args) -> int`` runs it, importing
what it needs lazily, so the device verbs (serve, vehicle, profile) never load torch.
A `SplitrtError` (a user mistake: bad file, flag or value) is printed as one line and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.lifecycle import StatusFile

#: verb -> module under splitrt.tools.cli (the order is the order of `splitrt --help`).
VERBS = {
    "export": "export",
    "profile": "profile",
    "serve": "serve",
    "vehicle": "vehicle",
    "bench": "bench",
    "evaluate": "evaluate",
    "train": "train",
    "export-policy": "export_policy",
    "keys": "keys",
    "hil": "hil",
    "record": "record",
    "doctor": "doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitrt",
        description="Hardware-in-the-loop split inference for vehicular edge computing.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module_name in VERBS.items():
        module = importlib.import_module(f"splitrt.tools.cli.{module_name}")
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            verb,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    status = StatusFile(getattr(args, "status_file", None))  # the verbs that start long-running processes
    try:
        return int(args._module.main(args) or 0)
    except SplitrtError as exc:
        print(f"splitrt {args.verb}: error: {exc}", file=sys.stderr)
        status.error(str(exc))
        return 1
    except Exception as exc:
        status.error(f"{type(exc).__name__}: {exc}")
        raise
    except KeyboardInterrupt:
        print(f"splitrt {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
