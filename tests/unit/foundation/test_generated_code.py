"""The committed stubs under agent/api/v1 must be exactly what scripts/gen_proto.py makes now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)], check=True
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh, "generator produced nothing"
    committed_dir = ROOT / "agent" / "api" / "v1"
    committed = {
        p.relative_to(ROOT): p.read_bytes()
        for p in committed_dir.iterdir()
        if p.is_file() and "_pb2" in p.name
    }
    stale = sorted(str(p) for p, data in fresh.items() if committed.get(p) != data)
    extra = sorted(str(p) for p in committed if p not in fresh)
    assert not stale, f"stale generated code, run `make proto`: {stale}"
    assert not extra, f"generated files without a .proto: {extra}"
