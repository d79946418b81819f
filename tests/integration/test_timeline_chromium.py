"""The timeline HTML really renders: a headless Chromium screenshot shows three bars,
and the browser's DOM holds the three model names as drawn labels.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). The screenshot and
the HTML are kept under ``artifacts/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from dbt_runner import DbtSession, Settings
from testbed._require import require_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini_project"
ARTIFACTS = ROOT / "artifacts"
SUCCESS_GREEN = (0x2C, 0xA0, 0x2C)  # dbt_runner._timeline.STATUS_COLOURS["success"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def decode_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and RGB rows of an 8-bit non-interlaced RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            upper_left = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, bpp)])  # type: ignore[misc]
        previous = line
    return width, height, rows


def bar_bands(rows: list[list[tuple[int, int, int]]], colour: tuple[int, int, int]) -> int:
    """How many separate horizontal bands hold a run of >= 40 pixels of ``colour``."""
    bands, inside = 0, False
    for row in rows:
        run = best = 0
        for pixel in row:
            run = run + 1 if pixel == colour else 0
            best = max(best, run)
        if best >= 40 and not inside:
            bands += 1
        inside = best >= 40
    return bands


def test_timeline_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    require_service(chromium is not None, "Chromium not found: apt-get install -y chromium")
    assert chromium is not None
    pytest.importorskip("plotly", reason="pip install 'dbt-runner[timeline]'")

    settings = Settings(
        project_dir=MINI,
        warehouse={"type": "duckdb", "path": str(tmp_path / "mini.duckdb"), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )
    with DbtSession(settings) as session:
        result = session.run_staging(threads=3)
    assert result.success, result.summary()

    ARTIFACTS.mkdir(exist_ok=True)
    html = result.timeline_html(ARTIFACTS / "timeline.html")
    png = ARTIFACTS / "timeline_chromium.png"
    png.unlink(missing_ok=True)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--hide-scrollbars",
        "--window-size=1200,700",
    ]
    assert html.stat().st_size < 1_000_000
    proc = subprocess.run(
        [chromium, *flags, f"--screenshot={png}", html.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert png.is_file(), proc.stdout + proc.stderr

    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1200, 700)
    colours = {pixel for row in rows for pixel in row}
    assert len(colours) > 50, "a blank page has a handful of colours; a chart has many"
    # the chart itself: one green bar for each of the three thread slots
    assert bar_bands(rows, SUCCESS_GREEN) == 3, f"see {png}"

    # names a person can read: the browser's DOM has each model's name as the text on its bar
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", html.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    ).stdout
    labels = re.findall(
        r'<g class="node" data-name="([^"]+)"[^>]*>.*?<text[^>]*>([^<]*)</text>', dom, re.S
    )
    assert sorted(labels) == [(f"part_{i}", f"part_{i}") for i in (1, 2, 3)], dom[:3000]
