"""Reading one big run: `wfl show` and `wfl status RUN` in linear time, laid out as rich lays
out a small table, with times formatted exactly as datetime formats them."""

from __future__ import annotations

import io
import random
import re
import resource
import shutil
import subprocess
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
from rich.console import Console
from rich.table import Table

from wfl import frames, journal, records
from wfl.bigtable import BIG, BigTable, cell, print_fast
from wfl.clock import iso, utc_text

WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"
FLOW = str(Path(__file__).resolve().parent / "cli_flows" / "quick.py")


def test_time_formatting_matches_datetime_exactly() -> None:
    rng = random.Random(7)
    values = [rng.uniform(0, 4e9) for _ in range(20_000)]
    values += [round(v, 3) for v in values[:5000]] + [round(v, 6) for v in values[:5000]]
    values += [1790000000.9999996, 1790000000.0005, 1790000000.9995, 0.0, 1e9 + 0.1234565]
    for v in values:
        dt = datetime.fromtimestamp(v, UTC)
        assert iso(v) == dt.isoformat(timespec="milliseconds"), v
        assert utc_text(v) == dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], v


def _table(rows: int, kind: type[Table]) -> Table:
    table = kind(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("NAME", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("WHAT")
    for i in range(rows):
        state = ("done", "green") if i % 3 else ("failed", "red")
        table.add_row(str(i), f"step_{i % 17}", cell(*state), f"did thing {i * 7919 % 1000}")
    return table


@pytest.mark.parametrize("rows", [BIG - 1, BIG, 2 * BIG])
def test_a_big_table_is_laid_out_as_rich_lays_it_out(rows: int) -> None:
    rich_out = io.StringIO()
    Console(file=rich_out, width=300).print(_table(rows, Table))
    fast_out = io.StringIO()
    print_fast(Console(file=fast_out, width=300), _table(rows, BigTable))
    expected = [line.rstrip() for line in rich_out.getvalue().splitlines()]
    assert [line.rstrip() for line in fast_out.getvalue().splitlines()] == expected
    assert len(expected) == rows + 1


def test_a_big_table_on_a_terminal_keeps_its_colours() -> None:
    out = io.StringIO()
    console = Console(file=out, width=300, force_terminal=True, color_system="standard")
    print_fast(console, _table(BIG, BigTable))
    text = out.getvalue()
    assert "\x1b[31mfailed\x1b[0m" in text
    assert "\x1b[32mdone\x1b[0m" in text
    plain = io.StringIO()
    Console(file=plain, width=300).print(_table(BIG, Table))
    stripped = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert stripped.splitlines() == [line.rstrip() for line in plain.getvalue().splitlines()]


def test_a_cell_prints_as_plain_text_not_markup() -> None:
    out = io.StringIO()
    table = BigTable()
    table.add_column("A")
    table.add_row(cell("[bold]not markup[/bold]", "red"))
    Console(file=out, width=100).print(table)
    assert "[bold]not markup[/bold]" in out.getvalue()


def _big_run(directory: Path, steps: int) -> str:
    run_id = "b1600000000b"
    t = 1_790_000_000.0
    recs = [
        records.run(run_id=run_id, workflow="quick", flow=FLOW, flow_sha="", args={},
                    created_at=t, version=0, on_complete=None, context=None, parent=None)
    ]  # fmt: skip
    for n in range(steps):
        t += 0.001
        recs += [
            records.sched(n, "query", "shout", {"text": f"hi {n}"}, t, t),
            records.att(n, 1, t),
            records.done(n, 1, f"HI {n}", t),
        ]
    recs.append(records.end("success", t, result="done"))
    directory.mkdir()
    journal.create(directory / f"{run_id}.journal", recs)
    return run_id


def _cpu_seconds(*args: str) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([WFL, *args], capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0, r.stderr
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, r.stdout


def test_show_and_status_of_a_30000_record_run_take_linear_time(tmp_path: Path) -> None:
    """CPU seconds, not wall time, so a loaded machine does not fail it: these took 15 s and
    10 s of CPU when rich laid out every row; now about half a second each."""
    d = tmp_path / "runs"
    run_id = _big_run(d, 10_000)
    cpu, out = _cpu_seconds("show", run_id, "--dir", str(d))
    assert cpu < 4, f"wfl show took {cpu:.1f} s of CPU"
    lines = out.splitlines()
    assert len(lines) == 30_003
    assert re.match(r"^\s+1\s+2026-09-21 \S+\s+sched\s+step 0 called: query shout", lines[2])
    cpu, out = _cpu_seconds("status", run_id, "--dir", str(d))
    assert cpu < 4, f"wfl status RUN took {cpu:.1f} s of CPU"
    assert re.search(r"^9999\s+shout\s+query\s+done\s+1\s", out, re.M)


def _outcome(fn: object, data: bytes) -> object:
    try:
        result = fn(data, start=len(journal.MAGIC), path="j")  # type: ignore[operator]
    except journal.JournalCorrupt as exc:
        return ("corrupt", exc.offset)
    return (result.records, result.end, result.torn)


def test_reading_all_frames_at_once_agrees_with_reading_each_frame() -> None:
    """journal.parse decodes every frame in one pass; on any doubt it falls back to frame by
    frame. Both must give the same records, torn tail and corruption offsets."""
    rng = random.Random(11)
    odd_payloads = [
        msgpack.packb([1, 2]),  # not a map
        msgpack.packb({"no_t": 1}),
        msgpack.packb({"t": "x"}) + msgpack.packb({"t": "y"}),  # two records in one frame
        msgpack.packb({"t": "x", "v": msgpack.ExtType(3, b"ab")}),
        msgpack.packb({"t": "x", "v": msgpack.Timestamp(5, 0)}),
        msgpack.packb({"t": "x", "v": b"\xd6\xff inert bytes"}),  # a Timestamp's pattern only
        b"",
    ]
    for trial in range(400):
        payloads = [
            msgpack.packb({"t": "s", "n": i, "at": rng.random() * 2e9, "b": rng.randbytes(5)})
            for i in range(rng.randrange(0, 12))
        ]
        if trial % 3 == 0 and payloads:
            payloads.insert(rng.randrange(len(payloads)), rng.choice(odd_payloads))
        data = journal.MAGIC + b"".join(
            frames._FRAME.pack(len(p), zlib.crc32(p)) + p for p in payloads
        )
        if trial % 4 == 1 and len(data) > 9:
            data = data[: rng.randrange(9, len(data))]  # a torn tail
        if trial % 5 == 2 and len(data) > 9:
            i = rng.randrange(9, len(data))
            data = data[:i] + bytes([data[i] ^ 0x41]) + data[i + 1 :]  # a flipped byte
        assert _outcome(journal.parse, data) == _outcome(frames._parse_frame_by_frame, data)


def test_a_small_table_too_wide_for_the_console_is_left_to_rich() -> None:
    """rich squeezes a table into a narrow console; for a few rows that is worth its time."""
    rich_out, fast_out = io.StringIO(), io.StringIO()
    Console(file=rich_out, width=25).print(_table(5, Table))
    print_fast(Console(file=fast_out, width=25), _table(5, BigTable))
    assert fast_out.getvalue() == rich_out.getvalue()
    assert max(map(len, fast_out.getvalue().splitlines())) <= 25


def test_indented_json_is_byte_for_byte_what_json_writes() -> None:
    """jsonout writes indented JSON itself (json's pure-Python encoder is ~0.4 s of
    `wfl status --json` over 10,000 runs): the same text as json.dumps(indent=...,
    default=repr) for every kind of value a journal or a run's status holds, and json's own
    errors (a cycle)."""
    import enum
    import json

    from wfl import jsonout

    class Small(enum.IntEnum):
        A = 3

    class Text(str):
        pass

    leaves = [None, True, False, 0, -5, 2**70, 1.5, -0.0, float("nan"), float("inf"),
              -float("inf"), 1e300, "", 'a"b\\\n\u00e9\U0001f600\u2028', b"by\x00tes",
              Small.A, Text("sub"), (1, 2), set(), []]  # fmt: skip
    keys: list[object] = ["k", "é", "", "a b", 1, 2.5, True, None, b"bk"]
    rng = random.Random(7)

    def value(depth: int) -> object:
        r = rng.random()
        if depth > 3 or r < 0.5:
            return rng.choice(leaves)
        if r < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        plain = rng.random() < 0.8
        return {
            rng.choice(keys[:4] if plain else keys): value(depth + 1)
            for _ in range(rng.randint(0, 3))
        }

    def expected(v: object, indent: int) -> str:
        try:
            return json.dumps(v, indent=indent, default=repr)
        except TypeError:  # keys json cannot hold: shown as their repr
            return json.dumps(jsonout._json_keys(v), indent=indent, default=repr)

    for _ in range(3000):
        v = value(0)
        for indent in (2, 0):
            assert jsonout.dumps(v, indent=indent) == expected(v, indent), v
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        jsonout.dumps(cycle, indent=2)
