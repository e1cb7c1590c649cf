"""Assertions shared by the command-line tests."""

from pathlib import Path


def snapshot(folder: Path) -> dict[str, bytes]:
    """The bytes of every file directly in ``folder``."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def assert_clean_failure(result, message: str, folder: Path | None = None, before: dict | None = None) -> None:
    """A non-zero exit with ``message`` in the output, no traceback, and (when given) every
    file of ``before`` in ``folder`` byte-for-byte unchanged."""
    assert result.exit_code != 0
    assert message in result.output.replace("\n", " "), result.output
    assert "Traceback" not in result.output
    if folder is not None:
        for name, data in before.items():
            assert (folder / name).read_bytes() == data, f"{name} changed"
