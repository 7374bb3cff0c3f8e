"""The one exception type the command line turns into a one-line message.

Anything a user can cause (a missing or corrupt video, a bad config key, an
output directory that already holds results) raises HpgenError with a message
that names the problem; the CLI prints ``hpgen: error: <message>`` and exits 2
instead of showing a traceback. Bugs stay ordinary exceptions.
"""


class HpgenError(Exception):
    """A user-facing error whose message is shown as one line."""
