"""One error type for bad datasets: the message names the file and what is wrong."""


class DatasetError(ValueError):
    """A dataset on disk that cannot be used: missing, empty, truncated, or not matching the feature spec."""
