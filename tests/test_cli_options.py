"""Every option is used or refused: for each (command, solver or method, option), the
option either changes what the command produces (the output files or the report's
entry) or is refused with a one-line error that names it."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lrrtool.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
runner = CliRunner()

#: A value for each option that differs from every default. (The series estimators are
#: checked with ``nuclear``: for lnn with gamma 1e-3 on patch groups their degree-16
#: series is too coarse in float32, see the README.)
VALUES = {
    "--reg": "laplace",
    "--lam": "37",
    "--gamma": "0.3",
    "--p": "0.5",
    "--iters": "1",
    "--lr": "0.5",
    "--estimator": "newton-schulz",
    "--model": "global",
    "--start": "biharmonic",
    "--width": "3",
    "--factors": "3",
    "--p-block": "1.5",
    "--patch": "4",
    "--group": "8",
    "--preset": "fast",
}
COMMON = ["--reg", "--lam", "--gamma", "--p", "--iters", "--lr", "--estimator"]

#: (command, the choice, its base arguments with few steps, options to try)
CASES = [
    (
        "inpaint",
        "threshold",
        ["--solver", "threshold", "--iters", "2"],
        [*COMMON, "--model", "--start", "--width", "--preset"],
    ),
    (
        "inpaint",
        "adam",
        ["--solver", "adam", "--iters", "4", "--reg", "nuclear"],
        [*COMMON, "--model", "--start", "--factors", "--preset"],
    ),
    (
        "inpaint",
        "dlrl",
        ["--method", "dlrl", "--iters", "3"],
        [*COMMON, "--width", "--factors", "--p-block", "--start", "--preset"],
    ),
    ("denoise", "threshold", ["--solver", "threshold", "--iters", "2"], [*COMMON, "--patch", "--group", "--preset"]),
    (
        "denoise",
        "adam",
        ["--solver", "adam", "--iters", "4", "--reg", "nuclear"],
        [*COMMON, "--patch", "--group", "--preset"],
    ),
    ("separate", "threshold", ["--solver", "threshold", "--iters", "4"], COMMON),
    ("separate", "adam", ["--solver", "adam", "--iters", "6"], COMMON),
    *[
        ("complete", method, ["--method", method, "--iters", "3"], [*COMMON[:-1], "--width", "--factors", "--p-block"])
        for method in ("blend", "lrr", "autorec", "dlrl", "mf")
    ],
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    image = Image.open(SAMPLES / "facade.jpg").crop((100, 100, 148, 148))
    image.save(root / "image.png")
    mask = Image.new("L", (48, 48), 0)
    mask.paste(255, (16, 16, 32, 32))  # a 16 px block: 19 % of the missing pixels are "wide", --start auto tests
    mask.paste(255, (4, 40, 44, 42))
    mask.save(root / "mask.png")
    frames = root / "frames"
    frames.mkdir()
    base = Image.open(SAMPLES / "photo.jpg").convert("L").crop((0, 0, 20, 16))
    for t in range(8):
        frame = base.copy()
        frame.paste(255, (2 * t, 5, 2 * t + 4, 9))
        frame.save(frames / f"{t:02d}.png")
    lines = ["user,item,rating"] + [
        f"u{u},i{i},{1 + (u * 7 + i * 3) % 5}" for u in range(16) for i in range(12) if (u + i) % 3
    ]
    (root / "ratings.csv").write_text("\n".join(lines) + "\n")
    (root / "pairs.csv").write_text("user,item\n" + "\n".join(f"u{u},i{u % 12}" for u in range(16)) + "\n")
    return root


def run(command: str, args: list[str], root: Path, name: str):
    """Run one command into ``root/name``; returns (exit code, output, produced bytes, report entry)."""
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    report = out / "report.json"
    if command == "inpaint":
        head = [str(root / "image.png"), "--mask", str(root / "mask.png"), "-o", str(out / "x.png")]
    elif command == "denoise":
        head = [str(root / "image.png"), "--sigma", "20", "-o", str(out / "x.png")]
    elif command == "separate":
        head = [str(root / "frames"), "--output-dir", str(out / "sep")]
    else:
        head = [str(root / "ratings.csv"), "--predict", str(root / "pairs.csv"), "-o", str(out / "x.csv")]
        head += ["--test-fraction", "0.2"]
    result = runner.invoke(app, [command, *head, *args, "--report", str(report), "-q"])
    files = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.suffix != ".json"}
    entry = None
    if report.exists():
        data = json.loads(report.read_text())
        entry = data["results"][0] if "results" in data else {"chunks": data["chunks"]}
        entry = _without_timings({k: v for k, v in entry.items() if k not in ("input", "output", "predict", "ratings")})
    return result.exit_code, result.output, files, entry


def _without_timings(value):
    """A report entry without its wall-clock figures, which differ on every run."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k and k != "fps"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


#: (command, choice) -> its base run, made once (its files and entry hold no path).
BASE_RUNS: dict[tuple[str, str], tuple] = {}


@pytest.mark.parametrize(
    ("command", "choice", "base", "option"),
    [(c, choice, base, option) for c, choice, base, options in CASES for option in options],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_option_is_used_or_refused(inputs, command, choice, base, option):
    key = (command, choice)
    if key not in BASE_RUNS:  # each choice's base run once for all its options
        BASE_RUNS[key] = run(command, base, inputs, f"{command}-{choice}-base")
    code, output, files, entry = BASE_RUNS[key]
    assert code == 0, output
    if option == "--iters":  # replace the base's step count
        at = base.index("--iters")
        base = base[:at] + base[at + 2 :]
    code, output, changed_files, changed_entry = run(command, [*base, option, VALUES[option]], inputs, "changed")
    if code == 0:
        assert (changed_files, changed_entry) != (files, entry), f"{option} was accepted and changed nothing"
    else:
        assert code == 1 and option in output and len(output.strip().splitlines()) == 1, output
