"""The timeline really renders: a headless Chromium screenshot of the SVG shows the bars and
phases, and the browser's DOM holds every label a person reads.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). The screenshot and
the HTML are kept under ``artifacts/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import html as html_lib
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from dbt_runner import DbtSession, Settings
from dbt_runner._timeline import PHASE_COLOURS, STATUS_COLOURS, write_timeline_html
from testbed._require import require_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini_project"
ARTIFACTS = ROOT / "artifacts"


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


_NODE_RECT = re.compile(
    r'<g class="node" data-name="([^"]*)" data-status="([^"]*)"><title>.*?</title>'
    r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"',
    re.DOTALL,
)


def drawn_bars(svg_text: str) -> list[tuple[str, str, float, float, float]]:
    """(name, status, x, y, width) of every node bar the SVG draws."""
    return [
        (name, status, float(x), float(y), float(w))
        for name, status, x, y, w in _NODE_RECT.findall(svg_text)
    ]


def _browser(chromium: str, tmp_path: Path, *args: str, timeout: int = 180) -> str:
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
    ]
    proc = subprocess.run(
        [chromium, *flags, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc.stdout + proc.stderr


def _colour(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def test_timeline_renders_in_headless_chromium(tmp_path: Path) -> None:
    """A real session: staging on 3 threads, its tests, a failing model. The SVG alone,
    as attached to a ticket, drawn by Chromium: the phases before the nodes, every node
    named, slots titled with their thread, one legend entry per colour, the error cut at
    a word boundary, times to the millisecond."""
    chromium = _chromium()
    require_service(chromium is not None, "Chromium not found: apt-get install -y chromium")
    assert chromium is not None

    settings = Settings(
        project_dir=MINI,
        warehouse={"type": "duckdb", "path": str(tmp_path / "mini.duckdb"), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )
    with DbtSession(settings) as session:
        staging = session.run_staging(threads=3)
        tests = session.run_tests()
        broken = session.invoke(["run", "--select", "tag:broken"])
    assert staging.success and tests.success, staging.summary() + tests.summary()
    assert not broken.success
    results = {"staging": staging, "tests": tests, "broken": broken}

    ARTIFACTS.mkdir(exist_ok=True)
    html = write_timeline_html(results, ARTIFACTS / "timeline.html")
    svg = html.with_suffix(".svg")
    png = ARTIFACTS / "timeline_chromium.png"
    png.unlink(missing_ok=True)
    assert html.stat().st_size < 1_000_000
    out = _browser(
        chromium, tmp_path, "--window-size=1200,900", f"--screenshot={png}", svg.as_uri()
    )
    assert png.is_file(), out

    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1200, 900)
    colours = {pixel for row in rows for pixel in row}
    assert len(colours) > 50, "a blank page has a handful of colours; a chart has many"
    # every node's bar is drawn where the SVG puts it, in its status's colour (the bars'
    # widths follow the nodes' durations, so the pixel inside each bar is checked, not a
    # width), and the phases before them
    bars = drawn_bars(svg.read_text())
    assert sorted(name for name, *_ in bars) == sorted(
        n.name for r in results.values() for n in r.nodes
    ), f"see {svg}"
    for name, status, x, y, w in bars:
        pixel = rows[int(y) + 4][int(x + min(3.0, w / 2))]
        assert pixel == _colour(STATUS_COLOURS[status]), f"{name}: {pixel} at {x},{y}: see {png}"
    for phase in ("open", "parse", "connect"):
        assert _colour(PHASE_COLOURS[phase]) in colours, f"no {phase} phase drawn: see {png}"
    assert _colour(STATUS_COLOURS["error"]) in colours, f"no failed bar: see {png}"

    # what a person reads: the DOM the browser built from the SVG alone
    dom = _browser(chromium, tmp_path, "--dump-dom", svg.as_uri())
    labels = dict(
        re.findall(
            r'<g class="node" data-name="([^"]+)"[^>]*>.*?<text class="label"[^>]*>([^<]*)</text>',
            dom,
            re.S,
        )
    )
    every = [n.name for r in results.values() for n in r.nodes]
    assert len(every) == 7
    assert labels == {name: name for name in every}, dom[:3000]  # tests too, by their names
    row_titles = re.findall(r'<text class="row"[^>]*>([^<]*)</text>', dom)
    for label, result in results.items():
        threads = sorted({(n.thread or "").split(" (")[0] for n in result.nodes})
        mine = [t for t in row_titles if t.startswith(f"{label} · slot ")]
        assert sorted(t.rsplit(" · ", 1)[1] for t in mine) == threads, row_titles
        assert f"{label} · before the nodes" in row_titles
    phases = re.findall(r'<g class="phase" data-name="([^"]+)"', dom)
    assert phases[:2] == ["open", "lock"] and "parse" in phases and "connect" in phases
    legend = re.findall(r'<g class="legend">.*?<text[^>]*>([^<]*)</text>', dom, re.S)
    assert "success / pass" in legend and "error" in legend
    assert len(legend) == len(set(legend)) and "pass" not in legend and "success" not in legend
    assert re.search(r"seconds after the command's start, [\d-]+ \d\d:\d\d:\d\d\.\d{3} UTC", dom)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{4}", dom), "times to the millisecond"
    [error_line] = re.findall(r'<text class="error"[^>]*>([^<]*)</text>', dom)
    assert error_line.startswith("broken [model_failure] ")
    shown = html_lib.unescape(error_line).removesuffix(" …").split()
    message = " ".join((broken.nodes[0].message or "").split()).split()
    assert shown[2:] == message[: len(shown) - 2]  # whole words, in order: cut between two
