"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class KitError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class SourcesUnavailable(KitError):
    """An upstream project can be neither copied from a sources directory nor fetched."""
