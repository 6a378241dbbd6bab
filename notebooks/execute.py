"""Run the notebooks and store their outputs; check that a fresh run reproduces them.

    python -m notebooks.execute                 # run every notebook, store its outputs in place
    python -m notebooks.execute 01 tour         # only the notebooks whose names contain 01 or tour
    python -m notebooks.execute --check        # run them, compare with what is stored, write nothing

Each notebook runs top to bottom on a fresh kernel, in a temporary folder (what it writes,
such as `outputs/`, is thrown away), importing this checkout's zkynet. The tests
(tests/test_notebooks.py) run every notebook the same way and compare its outputs with
the stored ones (`compare`), so stored outputs cannot drift from the code:

- the same outputs, cell by cell: the same kinds (printed text, a result, a figure, ...),
  in the same order, with the same formats (text/plain, image/png, text/html, ...);
- text (printed or a result's text, HTML tables included) equal, except that each
  number may move by `RTOL` of its value plus `ATOL`, plus one unit of its last printed
  decimal (0.981 may become 0.982): printed numbers are rounded;
- figures present: each stored image is an image in the fresh run too (pixels are not
  compared: fonts and Graphviz versions draw the same graph a little differently);
- no errors.

Cells whose numbers legitimately vary run to run (timings, speed-ups, samples/s) carry the
cell tag ``varies`` (Jupyter: the cell's property inspector; the tag is in the cell's
metadata): their outputs are checked for their form only, the same text with every number
replaced by ``#`` ("eager # ms/step, compiled # ms/step: #x faster"), the same kinds and
formats of outputs. Every other cell is compared in full.
"""

import argparse
import base64
import copy
import math
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "notebooks"
VARIES = "varies"  # the cell tag of cells whose numbers change run to run
RTOL = 1e-3  # each printed number may move by RTOL * |stored| + ATOL + one unit of its last printed decimal
ATOL = 1e-6
CELL_TIMEOUT = 600  # seconds one cell may run
IMAGE_FORMATS = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
_PNG = b"\x89PNG\r\n\x1a\n"
# a number (not the 32 of float32 or the 0 of layers.0; the 9 of 9x): sign, digits, decimals, exponent
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def notebooks(names: Iterable[str] = ()) -> list[Path]:
    """The notebooks, in order; with `names`, those whose file name contains one of them."""
    found = sorted(FOLDER.glob("*.ipynb"))
    names = list(names)
    if not names:
        return found
    chosen = [p for p in found if any(n in p.name for n in names)]
    missing = [n for n in names if not any(n in p.name for p in found)]
    if missing:
        raise SystemExit(f"no notebook in {FOLDER} matches {', '.join(missing)}")
    return chosen


def run(path: Path, workdir: str | Path | None = None) -> Any:
    """The notebook at `path`, executed top to bottom on a fresh kernel in `workdir` (a
    temporary folder by default), with its outputs; raises CellExecutionError on an error."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout's zkynet
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    with tempfile.TemporaryDirectory(prefix="zkynet-notebook-") as scratch:
        client = NotebookClient(
            notebook,
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir or scratch)}},
            record_timing=False,
            coalesce_streams=True,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its warning about TCP on the terminal
        )
        client.execute(env=env)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = _merged_streams(cell.outputs)
    return notebook


def _merged_streams(outputs: list[Any]) -> list[Any]:
    """Consecutive printed text to the same stream as one output (how the kernel splits it
    depends on timing)."""
    merged: list[Any] = []
    for output in outputs:
        if (
            output.output_type == "stream"
            and merged
            and merged[-1].output_type == "stream"
            and merged[-1].name == output.name
        ):
            merged[-1] = copy.deepcopy(merged[-1])
            merged[-1].text += output.text
        else:
            merged.append(output)
    return merged


def store(path: Path) -> None:
    """Run the notebook at `path` and write it back with its outputs."""
    notebook = run(path)
    notebook.metadata.get("language_info", {}).pop("version", None)  # the same notebook on any Python 3
    nbformat.write(notebook, path)


def _cpu_seconds() -> float:
    """CPU time of the processes this one started and waited for (kernels, what they ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compare(stored: Any, fresh: Any) -> list[str]:
    """What differs between the stored notebook and a fresh run of it, one line each
    (empty: they agree); see the module docstring for the rules."""
    problems: list[str] = []
    stored_cells = [c for c in stored.cells if c.cell_type == "code"]
    fresh_cells = [c for c in fresh.cells if c.cell_type == "code"]
    if [c.source for c in stored_cells] != [c.source for c in fresh_cells]:
        return ["the fresh run is of different code than the stored notebook"]
    for number, (old, new) in enumerate(zip(stored_cells, fresh_cells, strict=True), start=1):
        where = f"code cell {number} ({_first_line(old.source)})"
        form_only = VARIES in old.metadata.get("tags", [])
        errors = [o for o in new.outputs if o.output_type == "error"]
        if errors:
            problems.append(f"{where}: {errors[0].ename}: {errors[0].evalue}")
            continue
        old_outputs, new_outputs = _merged_streams(old.outputs), _merged_streams(new.outputs)
        old_kinds, new_kinds = [_kind(o) for o in old_outputs], [_kind(o) for o in new_outputs]
        if old_kinds != new_kinds:
            problems.append(f"{where}: stored outputs {old_kinds}, fresh run {new_kinds}")
            continue
        for old_output, new_output in zip(old_outputs, new_outputs, strict=True):
            for mime, old_text, new_text in _texts(old_output, new_output):
                problems += [f"{where}, {mime}: {p}" for p in compare_text(old_text, new_text, form_only)]
            for mime in _images(old_output):
                if not _is_image(new_output.get("data", {}).get(mime), mime):
                    problems.append(f"{where}: the stored {mime} figure is missing from the fresh run")
    return problems


def _first_line(source: str) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _kind(output: Any) -> str:
    """An output's kind and formats: 'stream stdout', 'display_data image/png+text/plain', ..."""
    if output.output_type == "stream":
        return f"stream {output.name}"
    return f"{output.output_type} {'+'.join(sorted(output.get('data', {})))}"


def _texts(old: Any, new: Any) -> list[tuple[str, str, str]]:
    if old.output_type == "stream":
        return [(f"printed ({old.name})", old.text, new.text)]
    return [
        (mime, _joined(old.data[mime]), _joined(new.data[mime]))
        for mime in sorted(old.get("data", {}))
        if mime not in IMAGE_FORMATS and isinstance(old.data[mime], (str, list))
    ]


def _joined(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _images(output: Any) -> list[str]:
    return [mime for mime in output.get("data", {}) if mime in IMAGE_FORMATS]


def _is_image(data: Any, mime: str) -> bool:
    """Whether `data` (as stored in a notebook) is an image of type `mime`."""
    if not data:
        return False
    text = _joined(data)
    if mime == "image/svg+xml":
        return "<svg" in text
    try:
        raw = base64.b64decode(text)
    except ValueError:
        return False
    signature = {"image/png": _PNG, "image/jpeg": b"\xff\xd8", "image/gif": b"GIF8"}[mime]
    return raw.startswith(signature)


def _form(text: str) -> str:
    return NUMBER.sub("#", text)


def _unit(token: str) -> float:
    """One unit of the last printed decimal of a number (0.001 for 0.981, 1e-08 for
    1.2e-07); 0 for one printed without decimals (an integer is exact)."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    if decimals == 0:
        return 0.0
    return 10.0 ** (int(exponent or 0) - decimals)


def compare_text(stored: str, fresh: str, form_only: bool = False) -> list[str]:
    """Differences between two texts: words must be equal and each number within the
    tolerance (`form_only`: only the words, numbers being '#')."""
    if _form(stored) != _form(fresh):
        return [f"the text changed:\n--- stored\n{_excerpt(stored)}\n--- fresh run\n{_excerpt(fresh)}"]
    if form_only:
        return []
    problems = []
    for old, new in zip(NUMBER.findall(stored), NUMBER.findall(fresh), strict=True):
        a, b = float(old), float(new)
        if math.isnan(a) and math.isnan(b):
            continue
        tolerance = ATOL + RTOL * abs(a) + max(_unit(old), _unit(new))
        if not abs(a - b) <= tolerance:
            problems.append(f"{old} became {new} (|difference| {abs(a - b):.3g} > tolerance {tolerance:.3g})")
    return problems


def _excerpt(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.execute", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="run only the notebooks whose file names contain one of these")
    parser.add_argument("--check", action="store_true", help="compare with the stored outputs; write nothing")
    args = parser.parse_args(argv)
    failed = 0
    total, total_cpu = time.perf_counter(), _cpu_seconds()
    for path in notebooks(args.names):
        started, cpu = time.perf_counter(), _cpu_seconds()
        if args.check:
            problems = compare(nbformat.read(path, as_version=4), run(path))
            failed += bool(problems)
            verdict = "reproduces its stored outputs" if not problems else f"{len(problems)} difference(s)"
        else:
            store(path)
            problems, verdict = [], "stored its outputs"
        seconds = f"{time.perf_counter() - started:.1f} s, {_cpu_seconds() - cpu:.1f} CPU s"
        print(f"{path.name}: {verdict} ({seconds})", flush=True)
        for problem in problems:
            print("  " + problem.replace("\n", "\n    "), flush=True)
    print(f"all done in {time.perf_counter() - total:.1f} s ({_cpu_seconds() - total_cpu:.1f} CPU s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
