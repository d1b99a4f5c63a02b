"""The GPU machine's wheel carrier: parts within the size limit, pieces reassembled exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.gpu_wheels import assemble, split_into_parts


def test_gpu_wheels_split_and_assemble_round_trip(tmp_path: Path) -> None:
    """Parts never exceed the limit; a cut wheel is whole again only once all its pieces arrived."""
    rng = np.random.default_rng(0)
    sources = {name: rng.bytes(size) for name, size in (("a-1.whl", 300), ("b-1.whl", 2_500), ("c-1.whl", 100))}
    src = tmp_path / "src"
    src.mkdir()
    for name, data in sources.items():
        (src / name).write_bytes(data)
    parts = split_into_parts([src / n for n in sources], tmp_path / "wheels", limit=1_000)
    assert all(sum(f.stat().st_size for f in p.iterdir()) <= 1_000 for p in parts)
    # b does not fit whole: its first piece fills what is left of part 1
    assert sorted(f.name for f in parts[0].iterdir()) == ["a-1.whl", "b-1.whl.piece0of3"]
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    got: dict[str, bytes] = {}
    for i, part in enumerate(parts):  # one part per call, as on the GPU machine
        for f in part.iterdir():
            (pieces / f.name).write_bytes(f.read_bytes())
        for whole in assemble(pieces):
            got[whole.name] = whole.read_bytes()
            whole.unlink()
        if i == 0:
            assert "b-1.whl" not in got
    assert got == sources
