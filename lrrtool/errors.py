"""The one domain exception of lrrtool."""

from __future__ import annotations


class LRRError(ValueError):
    """A user-facing error: bad input, bad parameters, or a diverged optimisation.

    The message is one line that says what was wrong and how to fix it, in the words of
    the library: parameters by their names (``lam``, ``resize_mask``), never by a command
    line's flags. ``parameter`` names the parameter at fault (``"lam"``) when there is
    one, and such messages start with it; ``mentions`` are the other parameters the
    message names (its advice); a front end rewords exactly those (the CLI prints
    ``--lam``, ``--resize-mask``). It pickles with
    both, so an error raised in a Ray task arrives whole.
    """

    def __init__(self, message: str, *, parameter: str | None = None, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.mentions = tuple(mentions)

    @property
    def names(self) -> tuple[str, ...]:
        """Every parameter the message names: ``parameter`` first, then ``mentions``."""
        return ((self.parameter,) if self.parameter else ()) + self.mentions

    def __reduce__(self):
        return _rebuild, (str(self), self.parameter, self.mentions)


def _rebuild(message: str, parameter: str | None, mentions: tuple[str, ...]) -> LRRError:
    return LRRError(message, parameter=parameter, mentions=mentions)
