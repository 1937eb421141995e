"""The one error type of calibration input."""


class CalibrationError(ValueError):
    """Calibration input that cannot be used (no frames, wrong shapes, missing states); the message says which."""
