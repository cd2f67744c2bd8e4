"""Exceptions that the CLI turns into one-line messages instead of tracebacks."""


class DebiasLabError(Exception):
    """Base class: a user-facing problem (bad input, missing file, unknown name).

    The message must name the offending thing (file, column, value) and say what was expected.
    """


class ConfigError(DebiasLabError):
    """An unknown name, a value out of range, or an option a component does not accept."""


class DataError(DebiasLabError):
    """A dataset file is missing, corrupt, or does not match its expected layout or checksum."""


class MissingLabelsError(DebiasLabError):
    """A method needs labels (groups / attributes) that the dataset does not provide."""


class TrainingError(DebiasLabError):
    """Training cannot continue (e.g. a non-finite loss); the last good checkpoint is kept."""


class RunDirError(DebiasLabError):
    """The output directory is unwritable, or already holds a finished run."""


class OutputError(DebiasLabError, OSError):
    """A file or folder cannot be written (a read-only place, a missing permission, a full disk); still an
    ``OSError`` for code that treats a failed write as one."""


def output_error(path: object, exc: OSError) -> OutputError:
    """The one-line error for a failed write of ``path``."""
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


class RunInUseError(RunDirError):
    """Another process holds the run directory's lock (it is training there now)."""


class DiskFullError(OutputError):
    """A file could not be written because its disk (or quota) is full; what was written before is intact."""
