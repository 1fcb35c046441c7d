"""User-facing error types: one line of text that names the problem, no traceback."""


class NervaError(Exception):
    """Base class of every error the CLI reports as a one-line message and a non-zero exit."""


class VideoError(NervaError):
    """A video could not be found, read, or written (missing file, unreadable stream, zero frames)."""


class ConfigError(NervaError):
    """A configuration or command-line option is invalid (unknown key, bad value, impossible size)."""


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as one short line for a message: its text (its type when it has none), whitespace
    (newlines included) folded to single spaces, cut at `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ResourceError(NervaError):
    """The machine lacks what a task needs (memory for a compiled program), found before the task starts."""
