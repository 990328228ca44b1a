"""The one exception type dipsim raises for bad input.

Every message is one line that names the file, field or option at fault and, where there is a
choice, the allowed values. The CLI prints it as ``dipsim: error: <message>`` and exits with 2.
"""


class DipsimError(Exception):
    """Bad input or an impossible request, explained in one line."""
