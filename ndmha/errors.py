"""Errors the workflow reports to the user as one clear message."""


class DataError(ValueError):
    """Bad input data: the message names the file or folder at fault."""


class ConfigError(ValueError):
    """An impossible configuration: the message names the config key at fault."""


class DiskFullError(OSError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT): the message names the file
    and the space left on its filesystem."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28]"


class TrainingInterrupted(Exception):
    """Training stopped on a signal (SLURM's ``--signal`` before a time limit or a preemption)
    after its step in flight, its checkpoint written: running the job again resumes it there."""

    #: the exit status of an interrupted training job (EX_TEMPFAIL: try again)
    EXIT_STATUS = 75
