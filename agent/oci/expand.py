"""Docker's word processing for Dockerfile arguments: quote removal and `$VAR` substitution (pure).

The rules follow the Dockerfile reference ("Environment replacement") as BuildKit implements them:

* `$name` and `${name}` are replaced by the variable's value, or by "" when it is unset;
* `${name:-word}` gives `word` when `name` is unset or empty, `${name-word}` only when unset;
  `${name:+word}` gives `word` when `name` is set and not empty, `${name+word}` when set;
  `${name:?msg}` / `${name?msg}` fail the build with `msg`. `word` is itself processed (nested vars);
* inside single quotes nothing is special; inside double quotes `$` expands and the escape character only
  escapes `"`, `$` and itself; outside quotes the escape character makes the next character literal;
* a `$` not followed by a name or `{` stays a literal `$`.

`split_words` splits an argument string into words the way `ENV`/`LABEL`/`ARG` see them (whitespace
outside quotes separates words; quotes and escapes are kept for `process_word` to remove later).
"""

from __future__ import annotations

from collections.abc import Mapping


class SubstitutionError(ValueError):
    """A word that cannot be processed (unterminated quote, bad `${...}`, `${x:?msg}` on an unset x)."""


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Processor:
    """One pass over one word; `stop` ends the word early (used for the `word` inside `${x:-word}`)."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def run(self, stop: str = "") -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self._peek()
            if stop and ch == stop:
                return "".join(out)
            self.pos += 1
            if ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._dollar())
            elif ch == self.escape:
                if self.pos < len(self.text):
                    out.append(self._next())
            else:
                out.append(ch)
        if stop:
            raise SubstitutionError(f"missing '{stop}' in {self.text!r}")
        return "".join(out)

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise SubstitutionError(f"unterminated single quote in {self.text!r}")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def _double_quoted(self) -> str:
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise SubstitutionError(f"unterminated double quote in {self.text!r}")
            ch = self._next()
            if ch == '"':
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
            elif ch == self.escape and self._peek() in ('"', "$", self.escape):
                out.append(self._next())
            else:
                out.append(ch)

    def _name(self) -> str:
        start = self.pos
        if self._peek().isdigit():  # positional parameters ($1) are one digit, like the shell's
            self.pos += 1
            return self.text[start : self.pos]
        while self.pos < len(self.text) and _is_name_char(self.text[self.pos]):
            self.pos += 1
        return self.text[start : self.pos]

    def _dollar(self) -> str:
        ch = self._peek()
        if ch == "{":
            self.pos += 1
            return self._braced()
        if ch and _is_name_char(ch):
            return self.env.get(self._name(), "")
        return "$"

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise SubstitutionError(f"bad substitution in {self.text!r}: missing variable name after '${{'")
        ch = self._next()
        if not ch:
            raise SubstitutionError(f"missing '}}' in {self.text!r}")
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            ch = self._next()
        if ch not in ("-", "+", "?"):
            shown = (":" if colon else "") + ch
            raise SubstitutionError(
                f"unsupported modifier {shown!r} in substitution of {name!r} (supported: :- - :+ + :? ?)"
            )
        word = self.run(stop="}")
        self.pos += 1  # the closing brace
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise SubstitutionError(f"{name}: {word or 'is not set'}")
        return value or ""


def process_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Remove quotes and escapes from `word` and substitute variables from `env`."""
    return _Processor(word, env, escape).run()


def process_words(
    words: list[str] | tuple[str, ...], env: Mapping[str, str], escape: str = "\\"
) -> list[str]:
    return [process_word(w, env, escape) for w in words]


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Whitespace-separated words, quotes and escapes kept; `"a b"` and `''` stay one word each."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    in_word = False
    keep_empty = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote:
            word.append(ch)
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'" and i + 1 < n:
                i += 1
                word.append(text[i])
            i += 1
            continue
        if ch.isspace():
            if in_word and (word or keep_empty):
                words.append("".join(word))
            word, in_word, keep_empty = [], False, False
            i += 1
            continue
        in_word = True
        if ch in ("'", '"'):
            quote = ch
            keep_empty = True
            word.append(ch)
        elif ch == escape:
            if i + 1 < n:
                word.append(ch)
                i += 1
                word.append(text[i])
        else:
            word.append(ch)
        i += 1
    if in_word and (word or keep_empty):
        words.append("".join(word))
    return words
