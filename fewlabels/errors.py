"""The errors a user can fix, by kind. A stage prints one line for these and exits 1 (stages/_common.py);
anything else is a bug in our code and keeps its traceback."""


class UserError(Exception):
    """Something the user can fix; the message is one line that says how."""


class ParamError(UserError):
    """A bad or missing setting in params.yaml."""


class DataError(UserError):
    """Missing, corrupt or unsuitable data: a raw file, a prepared array, a checkpoint."""


class DeviceError(UserError):
    """The requested device cannot be used (e.g. train.device: cuda without a visible GPU)."""
