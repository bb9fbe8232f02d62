"""Generate Python code, Envoy's descriptor set and the OpenAPI document from ``protos/`` (``make proto``)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DESCRIPTOR_SET = ROOT / "build" / "tradingtools.pb"


def main() -> int:
    """Run protoc over every .proto file; non-zero exit on any error."""
    site = Path(grpc_tools.__file__).resolve().parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    DESCRIPTOR_SET.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{site}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--pyi_out={ROOT}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={DESCRIPTOR_SET}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return int(code)
    print(f"generated {len(files)} proto files; descriptor set at {DESCRIPTOR_SET.relative_to(ROOT)}")
    from tools import openapi  # imports generated code: only once protoc has written it

    return openapi.main(["--descriptor", str(DESCRIPTOR_SET)])


if __name__ == "__main__":
    sys.exit(main())
