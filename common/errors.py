"""The one exception type dipsim raises for bad input.

Every message is one line that names the file, field or option at fault and, where there is a
choice, the allowed values. The CLI prints it as ``dipsim: error: <message>`` and exits with 2.
"""


class DipsimError(Exception):
    """Bad input or an impossible request, explained in one line."""


def one_line(message: str, longest: int = 120) -> str:
    """``message`` as the single line the command line prints: whitespace collapsed, and every word
    longer than ``longest`` characters (a 3000-character file name, a pasted document) cut in the
    middle with its length said, so that the line stays readable."""
    words = []
    for w in str(message).split():
        if len(w) > longest:
            end = len(w.rstrip(":;,"))           # "NAME:" stays "NAME (n characters):"
            w = f"{w[:longest // 2]}...{w[end - longest // 4:end]} ({end} characters){w[end:]}"
        words.append(w)
    return " ".join(words)
