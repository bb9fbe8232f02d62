"""Print what each service can be configured with: its settings, then its tuning constants with their reasons.

``python -m tools.settings [service ...]`` (default: every service). Settings are what an operator sets (the
table of the service's ``config.py``); tuning constants are code (``common.tuning``), listed with the variable
that would override one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Sequence

from common.tuning import describe, variable

SERVICES = ("ingest", "router", "executor", "guard", "control")


def render(service: str) -> str:
    """The settings table and the tuning constants of ``service`` as text."""
    module = importlib.import_module(f"services.{service}.config")
    out = [f"== {service}", "", (module.__doc__ or "").strip(), ""]
    tuning = getattr(module, "Tuning", None)
    if tuning is not None:
        out.append("tuning constants (code; override: variable=value):")
        for name, default, why in describe(tuning):
            out.append(f"  {name} = {default}   [{variable(service, name)}]")
            out.extend(textwrap.wrap(why, width=100, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the chosen services' settings and tuning constants."""
    parser = argparse.ArgumentParser(prog="python -m tools.settings", description=__doc__)
    parser.add_argument("services", nargs="*", metavar="service", help=f"some of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.services if s not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}: choose among {', '.join(SERVICES)}")
    for service in args.services or SERVICES:
        sys.stdout.write(render(service) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
