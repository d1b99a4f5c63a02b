"""Carry drl's GPU backends to an offline GPU machine as wheels, in parts that fit one transfer each.

    python -m benchmarks.gpu_wheels pack [--out .wheels] [--max-mb 56]     # here: download and split
    python -m benchmarks.gpu_wheels install .wheels/part-1 --target .gpu_site   # there: one part per call

A GPU machine with CUDA torch but no package registry lacks gymnasium (all drl envs need it) and
MuJoCo Warp (``warp-lang``, ``mujoco-warp``, ``mujoco``). ``pack`` downloads the CPython 3.12
manylinux wheels of those, drops what a CUDA-only run never loads from warp's wheel (the 69 MB CPU
compiler ``warp-clang.so``, examples and tests; warp then runs its kernels on CUDA only) and
recompresses it with LZMA (pip reads LZMA zip members), then cuts the files into parts of at most
``--max-mb``. Part 1 holds gymnasium, so the torch-batched envs work after the first part alone.

``install`` may be called once per part, in separate calls: pieces of a cut wheel are kept in
``<target>/.pieces`` until every piece (named ``<wheel>.piece<k>of<n>``) has arrived; each complete
wheel is installed into ``--target`` with pip (no index, no dependencies). Use the result with
``PYTHONPATH=<target>``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = [  # the torch-batched envs need the first two; the rest is MuJoCo Warp
    "gymnasium==1.4.0", "farama-notifications==0.0.6", "mujoco==4.0.0", "mujoco-core==4.0.0", "glfw",
    "pyopengl", "mujoco-warp==4.0.0", "warp-lang==1.19.0",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
PIECE = re.compile(r"^(?P<wheel>.+\.whl)\.piece(?P<k>\d+)of(?P<n>\d+)$")


def _drop_from_warp(name: str) -> bool:
    return name == "warp/bin/warp-clang.so" or name.startswith(("warp/examples/", "warp/tests/"))


def slim_warp_wheel(src: Path, dst: Path) -> None:
    """Copy warp's wheel without its CPU compiler, examples and tests, LZMA-compressed; RECORD updated."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_LZMA) as zout:
        for info in zin.infolist():
            if _drop_from_warp(info.filename):
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [r for r in csv.reader(io.StringIO(data.decode())) if r and not _drop_from_warp(r[0])]
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows(rows)
                data = text.getvalue().encode()
            zout.writestr(info, data, compress_type=zipfile.ZIP_LZMA)


def pack(out: Path, max_mb: int, python: str) -> list[Path]:
    """Download, slim and split the wheels into ``out/part-<i>``; returns the part folders."""
    limit = max_mb * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        dl = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "-d", str(dl)]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd + PACKAGES, check=True)
        files: list[Path] = []
        for name in PACKAGES:  # the order of PACKAGES: gymnasium lands in part 1
            stem = re.split(r"[=<>]", name)[0].replace("-", "_").lower()
            match = [f for f in dl.glob("*.whl") if f.name.lower().startswith(stem + "-")]
            if len(match) != 1:
                raise SystemExit(f"expected one wheel for {name}, found {[f.name for f in match]}")
            wheel = match[0]
            if stem == "warp_lang":
                slim = dl / "slim" / wheel.name
                slim.parent.mkdir(exist_ok=True)
                slim_warp_wheel(wheel, slim)
                wheel = slim
            files.append(wheel)
        return split_into_parts(files, out, limit)


def split_into_parts(files: list[Path], out: Path, limit: int) -> list[Path]:
    """Put ``files`` (in order) into ``out/part-<i>`` folders of at most ``limit`` bytes each.

    A file that fits nowhere whole is cut: its first piece fills the current part, the rest follow.
    """
    if out.exists():
        shutil.rmtree(out)
    parts: list[Path] = []
    used = limit

    def new_part() -> None:
        nonlocal used
        parts.append(out / f"part-{len(parts) + 1}")
        parts[-1].mkdir(parents=True)
        used = 0

    for wheel in files:
        data = wheel.read_bytes()
        if used + len(data) > limit and len(data) <= limit:
            new_part()
        if used + len(data) <= limit:
            (parts[-1] / wheel.name).write_bytes(data)
            used += len(data)
            continue
        first = limit - used if limit - used >= min(2**20, limit // 4) else 0  # room left in this part
        bounds = [0, *range(first or limit, len(data), limit), len(data)]
        count = len(bounds) - 1
        for k in range(count):
            if k > 0 or not first:
                new_part()
            chunk = data[bounds[k]:bounds[k + 1]]
            (parts[-1] / f"{wheel.name}.piece{k}of{count}").write_bytes(chunk)
            used += len(chunk)
    for part in parts:
        size = sum(f.stat().st_size for f in part.iterdir()) / 2**20
        print(f"{part}: {size:.1f} MiB, {sorted(f.name for f in part.iterdir())}")
    return parts


def assemble(pieces: Path) -> list[Path]:
    """Join the pieces in ``pieces`` of every wheel whose pieces have all arrived; returns the whole wheels."""
    ready: list[Path] = []
    groups: dict[str, list[tuple[int, int, Path]]] = {}
    for f in sorted(pieces.iterdir()):
        m = PIECE.match(f.name)
        if m:
            groups.setdefault(m["wheel"], []).append((int(m["k"]), int(m["n"]), f))
        elif f.suffix == ".whl":
            ready.append(f)
    for wheel, got in groups.items():
        if len(got) == got[0][1]:
            whole = pieces / wheel
            with whole.open("wb") as out:
                for _k, _n, f in sorted(got):
                    out.write(f.read_bytes())
                    f.unlink()
            ready.append(whole)
        else:
            print(f"{wheel}: {len(got)} of {got[0][1]} pieces so far")
    return ready


def install(part_dirs: list[Path], target: Path) -> list[str]:
    """Install every wheel that is complete after adding these parts; returns the installed file names."""
    pieces = target / ".pieces"
    pieces.mkdir(parents=True, exist_ok=True)
    for part in part_dirs:
        for f in part.iterdir():
            shutil.copy2(f, pieces / f.name)
    ready = assemble(pieces)
    if ready:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, ready)], check=True)
        for f in ready:
            f.unlink()
    names = [f.name for f in ready]
    print(f"installed into {target}: {names or 'nothing new'}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="download and split the wheels (on a machine with a registry)")
    p.add_argument("--out", type=Path, default=Path(".wheels"))
    p.add_argument("--max-mb", type=int, default=56, help="size of one part in MiB")
    p.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    i = sub.add_parser("install", help="install the wheels of one or more parts (on the GPU machine)")
    i.add_argument("parts", type=Path, nargs="+")
    i.add_argument("--target", type=Path, default=Path(".gpu_site"))
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.out, args.max_mb, args.python)
    else:
        install(args.parts, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
