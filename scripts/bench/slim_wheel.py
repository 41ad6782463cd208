"""Rewrite a wheel without the parts a training run never imports, so the GPU wheels fit one carry.

    python scripts/bench/slim_wheel.py WHEEL [WHEEL ...]

pyarrow's wheel is 53 MiB, more than half of what one device call carries; most of it is Arrow
Flight (RPC), the S3 filesystem, C++ headers, Cython sources and tests, none of which `datasets`
loads for local JSON files (pyarrow imports its optional filesystems lazily and tolerates their
absence). pandas ships its test suite. The rewritten wheel has a matching RECORD (sha256 and size
of every file kept), so `pip install` treats it as any other wheel. Files are replaced in place.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

# Per distribution: members (glob on the path inside the wheel) that are dropped.
DROP = {
    "pyarrow": [
        "pyarrow/libarrow_flight.so*",
        "pyarrow/_flight.*",
        "pyarrow/libarrow_python_flight.so*",
        "pyarrow/flight.py",
        "pyarrow/libarrow_s3.so*",
        "pyarrow/_s3fs.*",
        "pyarrow/include/*",
        "pyarrow/tests/*",
        "pyarrow/src/*",
        "pyarrow/includes/*",
        "pyarrow/*.pyx",
        "pyarrow/*.pxd",
        "pyarrow/*.pxi",
        "pyarrow/_pyarrow_cpp_tests.*",
    ],
    "pandas": ["pandas/tests/*", "pandas/conftest.py"],
}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim(wheel: Path) -> tuple[int, int]:
    """Drop the members `DROP` lists for this wheel's distribution; returns (bytes before, after)."""
    name = wheel.name.split("-")[0].lower().replace("_", "-")
    patterns = DROP.get(name, [])
    before = wheel.stat().st_size
    if not patterns:
        return before, before
    with zipfile.ZipFile(wheel) as src:
        members = [m for m in src.infolist() if not m.is_dir()]
        record_name = next(m.filename for m in members if m.filename.endswith(".dist-info/RECORD"))
        kept = [
            m
            for m in members
            if m.filename != record_name and not any(fnmatch.fnmatch(m.filename, p) for p in patterns)
        ]
        fd, tmp = tempfile.mkstemp(dir=wheel.parent, suffix=".whl")
        os.close(fd)
        rows = []
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for member in kept:
                data = src.read(member)
                dst.writestr(member, data)
                rows.append((member.filename, _record_hash(data), str(len(data))))
            rows.append((record_name, "", ""))
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(rows)
            dst.writestr(record_name, out.getvalue())
    os.replace(tmp, wheel)
    return before, wheel.stat().st_size


def main() -> None:
    for arg in sys.argv[1:]:
        before, after = slim(Path(arg))
        if before != after:
            print(f"{Path(arg).name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
