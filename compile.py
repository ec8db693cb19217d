"""Writes every pipeline's and component's YAML for Vertex AI Pipelines and for reuse.

    python compile.py [--output-dir build]

Pipelines go to `build/pipelines/<name>.yaml`, components to `build/components/<name>.yaml`; load a
component in another pipeline with `kfp.components.load_component_from_file(...)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def compile_all(output_dir: str | Path = "build") -> list[Path]:
    """Compiles every pipeline and component; returns the files written."""
    from kfp import compiler

    import embedpipe.components as components
    from embedpipe.pipelines import PIPELINES

    output_dir = Path(output_dir)
    written = []
    for name, pipeline in PIPELINES.items():
        path = output_dir / "pipelines" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    for name in components.__all__:
        if name.endswith("Op"):
            continue  # CamelCase aliases of the same components
        path = output_dir / "components" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(getattr(components, name), str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="build", help="where to write the YAML (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in compile_all(args.output_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
