"""The one exception type the tool raises for bad input.

Its message is a single line meant for the user: it names the file (and row or key) and what was expected.
The CLI prints it as ``error: <message>`` and exits with status 2.
"""


class TextDistillError(Exception):
    """Bad input or an impossible request, explained in one line."""
