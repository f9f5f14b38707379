"""``python3 -m launch.tools.strip_ray WHEEL OUT_DIR``: a Ray wheel without what chips never use,
small enough to travel to a lent GPU machine beside the CIFAR-10 data (64 MiB in all).

Dropped: the Java jars and Ray's libraries (rllib, data, serve, train, tune, llm, air, workflow)
and its tests. Kept: the core (``_raylet.so``, ``gcs_server``, ``raylet``), ``_private`` and the
dashboard package, whose agent the raylet starts even with ``include_dashboard=False`` (without
it the raylet exits at start). Every kept entry is copied as it is (its permission bits too, so
the binaries stay executable when pip installs it) and ``RECORD`` lists the kept files only, so
``pip install --no-index --no-deps --target DIR`` takes the result like the original. Measured
in docs/measurements/gpu-plan-2026-12-07.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

DROP = tuple(f"ray/{d}/" for d in ("jars", "rllib", "data", "serve", "train", "tune", "llm", "air",
                                    "workflow", "tests"))


def strip_wheel(src: Path, out_dir: Path, drop: tuple[str, ...] = DROP) -> dict[str, int]:
    """Write ``out_dir/<src's name>`` without the entries under ``drop``; returns sizes and counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / src.name
    if dst.resolve() == src.resolve():
        raise SystemExit(f"strip_ray: OUT_DIR must differ from the wheel's folder ({src.parent})")
    kept = dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        names = {i.filename for i in zin.infolist()}
        for info in zin.infolist():
            if info.filename.startswith(drop):
                dropped += 1
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(ln for ln in lines if ln.split(",", 1)[0] in names
                               and not ln.startswith(drop)).encode()
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.external_attr, copy.create_system = info.external_attr, info.create_system
            copy.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(copy, data, compresslevel=9)
            kept += 1
    return {"bytes": dst.stat().st_size, "source_bytes": src.stat().st_size, "kept": kept, "dropped": dropped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wheel", type=Path, help="a Ray wheel (.whl)")
    p.add_argument("out_dir", type=Path, help="folder for the stripped wheel (same file name)")
    a = p.parse_args(argv)
    print(json.dumps({"wheel": str(a.out_dir / a.wheel.name), **strip_wheel(a.wheel, a.out_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
