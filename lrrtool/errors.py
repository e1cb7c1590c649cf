"""The one domain exception of lrrtool."""


class LRRError(ValueError):
    """A user-facing error: bad input, bad parameters, or a diverged optimisation.

    The message is one line that says what was wrong and how to fix it; the CLI prints
    it and exits with a non-zero code, never a traceback. ``parameter`` names the library
    parameter at fault (``"lam"``) when there is one; such messages start with that name,
    so the CLI can print the flag (``--lam``) in its place.
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
