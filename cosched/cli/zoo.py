"""``cosched zoo``: list the reference models and export them to ONNX."""

from __future__ import annotations

import argparse

from cosched import zoo

__all__ = ["register"]

EXPORT_EPILOG = """\
examples:
  cosched zoo export resnet50 -o resnet50.onnx
  cosched zoo export bert --size full --dynamic-batch -o bert.onnx
  cosched zoo export dlrm --legacy-exporter --batch 8 -o dlrm_b8.onnx
exports are cached (in $COSCHED_CACHE_DIR, default ~/.cache/cosched/zoo)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "zoo",
        help="list the reference models and export them to ONNX",
        description="Reference models (torch.nn, seeded weights) exported to ONNX.",
    )
    verbs = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    listing = verbs.add_parser(
        "list",
        help="list models, sizes, input shapes and parameter counts",
        description="List every zoo model and size with its inputs (B = batch) and parameters.",
    )
    listing.set_defaults(func=_list)
    export = verbs.add_parser(
        "export",
        help="export one model to an ONNX file",
        description="Export a zoo model to ONNX (weights inside the file).",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("name", metavar="NAME", help=f"model: {', '.join(zoo.names())}")
    export.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="file to write")
    export.add_argument(
        "--size", default="tiny", choices=zoo.SIZES,
        help="tiny: same topology, narrow and small input (default); full: published architecture",
    )  # fmt: skip
    export.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    export.add_argument(
        "--dynamic-batch", action="store_true",
        help="make the batch dimension symbolic ('batch') in every input and output",
    )  # fmt: skip
    export.add_argument(
        "--legacy-exporter", action="store_true",
        help="use the TorchScript exporter (dynamo=False); its files carry Shape/Gather/Concat chains",
    )  # fmt: skip
    export.set_defaults(func=_export)


def _format_params(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}K"


def _list(args: argparse.Namespace) -> int:
    rows = [("MODEL", "SIZE", "INPUTS", "OUTPUTS", "PARAMS")]
    for name in zoo.names():
        model = zoo.ZOO[name]
        for size in model.sizes:
            inputs = " ".join(
                f"{s.name}:{s.dtype}[{','.join(('B', *map(str, s.shape)))}]"
                for s in model.input_specs(size)
            )
            params = _format_params(model.param_count(size))
            rows.append((name, size, inputs, ",".join(model.output_names), params))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _export(args: argparse.Namespace) -> int:
    path = zoo.export(
        args.name,
        args.output,
        size=args.size,
        batch=args.batch,
        dynamic_batch=args.dynamic_batch,
        legacy=args.legacy_exporter,
    )
    print(path)
    return 0
