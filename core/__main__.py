"""``python -m core`` (also the ``jaxtf`` command): export a JAX function to every format.

    python -m core export MODULE:FUNCTION f32[1,28,28,1] --to saved_model,tflite,tfjs,onnx \\
        --out DIR [--params MODULE:PARAMS] [--sizes b=4]

Each format is converted for its own target, written under DIR, run in its own runtime on
a random input and compared with ``jax.jit``; a table gives size, largest error and time
per call. ``python -m core registry ...`` is ``python -m core.registry ...``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from core import _import_tensorflow_quietly
    _import_tensorflow_quietly()    # before anything imports it: a quiet command line
    if argv[:1] == ["registry"]:
        from core.coverage import main as registry_main
        return registry_main(argv[1:])
    from core.export import FORMATS
    p = argparse.ArgumentParser(prog="jaxtf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write and check SavedModel/TFLite/TF.js/ONNX files")
    ex.add_argument("function", help="MODULE:FUNCTION, a JAX function (with --params: "
                    "FUNCTION(params, *inputs), e.g. a flax module's apply)")
    ex.add_argument("inputs", nargs="+", help="one spec per input: f32[1,28,28,1], "
                    "i32[b,16] (a name is a symbolic size), bf16[], bool[3]")
    ex.add_argument("--to", default=",".join(FORMATS),
                    help=f"comma-separated formats (default: all of {','.join(FORMATS)})")
    ex.add_argument("--out", required=True, help="directory to write the artifacts to")
    ex.add_argument("--params", help="MODULE:NAME of the parameter pytree (or of a "
                    "function returning it); they become variables in the SavedModel")
    ex.add_argument("--sizes", default="", help="sizes of symbolic dimensions for the "
                    "check run, e.g. b=4 (default 2)")
    ex.add_argument("--no-check", action="store_true", help="write only; do not run")
    args = p.parse_args(argv)

    from core.errors import JaxtfError
    from core.export import export_model, format_report, load_object
    sys.path.insert(0, os.getcwd())
    try:
        fn = load_object(args.function)
        params = None
        if args.params:
            params = load_object(args.params)
            params = params() if callable(params) else params
        sizes = dict((k, int(v)) for k, _, v in
                     (s.partition("=") for s in args.sizes.split(",") if s))
        results = export_model(fn, args.inputs, args.out, params=params,
                               to=[f.strip() for f in args.to.split(",") if f.strip()],
                               check=not args.no_check, sizes=sizes,
                               progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (JaxtfError, ValueError, ImportError, AttributeError) as exc:
        print(f"jaxtf export: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_report(results))
    return 0 if all(r.matches is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
