"""``cosched demo``: a no-argument tour of the pipeline on tiny zoo models."""

from __future__ import annotations

import argparse

from cosched import zoo
from cosched.ir import format_summary, fuse, load_models

__all__ = ["register"]

DEMO_TENANTS = ("resnet50", "bert")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="export tiny zoo models, import them into one merged graph, print its summary",
        description=(
            "Exports tiny versions of "
            + " and ".join(DEMO_TENANTS)
            + " (cached), imports them together as tenants of one merged graph, fuses ops "
            "into tasks and prints the merged summary. Needs no arguments."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = [zoo.export(name, size="tiny") for name in DEMO_TENANTS]
    graph = fuse(load_models(paths)).verify()
    print(f"merged {len(graph.tenants)} tenants from: " + ", ".join(str(p) for p in paths))
    print(format_summary(graph.summary()))
    return 0
