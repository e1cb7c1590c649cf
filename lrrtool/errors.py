"""The one domain exception of lrrtool."""


class LRRError(Exception):
    """A user-facing error: bad input, bad parameters, or a diverged optimisation.

    The message is one line that says what was wrong and how to fix it; the CLI prints
    it and exits with a non-zero code, never a traceback.
    """
