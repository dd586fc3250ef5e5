"""The files.list ``q`` language: tokenizer, recursive-descent parser, predicates.

Supported terms (as in Drive's "Search for files" guide)::

    'ID' in parents          'me' in owners | 'EMAIL' in owners (writers, readers too)
    name = | != 'x'          name contains 'x'     (prefix of a word, case-insensitive)
    mimeType = | != 'x'      mimeType contains 'x'
    fullText contains 'x'    (name and description, word prefix)
    trashed = | != true|false          starred = | != true|false
    modifiedTime|createdTime|viewedByMeTime|modifiedByMeTime  = != < <= > >=  'RFC 3339'
    appProperties has { key='k' and value='v' }   (and properties)
    sharedWithMe = true|false          (nothing is shared with the fake's single user)

joined by ``and`` / ``or`` (``and`` binds tighter), ``not``, and parentheses.
String literals use single quotes with ``\\'`` and ``\\\\`` escapes. Anything else
is answered with Drive's ``400 Invalid Value`` (location ``q``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import DriveError, invalid

if TYPE_CHECKING:
    from .records import FileRecord

Predicate = Callable[["FileRecord"], bool]

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|=|<|>)|"
                    r"(?P<punct>[(){}])|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|"
                    r"(?P<num>-?\d+(?:\.\d+)?))")
_TIME_FIELDS = {"modifiedTime": "modified", "createdTime": "created",
                "viewedByMeTime": "modified", "modifiedByMeTime": "modified"}


def _bad(q: str) -> DriveError:
    return DriveError(400, "invalid", "Invalid Value", location="q")


def tokenize(q: str) -> list[tuple[str, str]]:
    """Split ``q`` into (kind, text) tokens; string tokens are unescaped."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = _TOKEN.match(q, pos)
        if not m:
            raise _bad(q)
        pos = m.end()
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "str":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        tokens.append((kind, text))
    return tokens


def parse_time(text: str) -> int:
    """An RFC 3339 date-time (UTC when no offset is given) as epoch milliseconds."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise DriveError(400, "invalid", "Invalid Value", location="q") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def word_prefix_match(haystack: str, needle: str) -> bool:
    """Drive's ``name contains``: ``needle`` starts the name or a word in it
    (case-insensitive; words are separated by non-alphanumerics)."""
    h, n = haystack.lower(), needle.lower()
    if not n:
        return True
    return any((i == 0 or not h[i - 1].isalnum()) and h.startswith(n, i)
               for i in range(len(h)))


class _Parser:
    def __init__(self, q: str, user_email: str, aliases: dict[str, str]) -> None:
        self.q = q
        self.aliases = aliases
        self.tokens = tokenize(q)
        self.pos = 0
        self.user_email = user_email

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _bad(self.q)
        self.pos += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].lower() == word:
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, text: str | None = None) -> str:
        k, t = self.take()
        if k != kind or (text is not None and t.lower() != text):
            raise _bad(self.q)
        return t

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek() is not None:
            raise _bad(self.q)
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.keyword("or"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda f: any(p(f) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.keyword("and"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda f: all(p(f) for p in parts))

    def not_expr(self) -> Predicate:
        if self.keyword("not"):
            inner = self.not_expr()
            return lambda f: not inner(f)
        tok = self.peek()
        if tok == ("punct", "("):
            self.pos += 1
            inner = self.or_expr()
            self.expect("punct", ")")
            return inner
        return self.term()

    def value(self) -> tuple[str, str]:
        kind, text = self.take()
        if kind == "word" and text.lower() in ("true", "false"):
            return "bool", text.lower()
        if kind in ("str", "num"):
            return kind, text
        raise _bad(self.q)

    def term(self) -> Predicate:
        kind, text = self.take()
        if kind == "str":  # 'x' in parents
            self.expect("word", "in")
            return self.membership(text, self.expect("word"))
        if kind != "word":
            raise _bad(self.q)
        field = text
        if self.keyword("contains"):
            return self.contains(field, self.expect("str"))
        if self.keyword("has"):
            return self.has(field)
        op = self.expect("op")
        vkind, value = self.value()
        return self.compare(field, op, vkind, value)

    def membership(self, value: str, field: str) -> Predicate:
        if field == "parents":
            value = self.aliases.get(value, value)
            return lambda f: value in f.parents
        if field in ("owners", "writers", "readers"):
            me = self.user_email.lower()
            return lambda f: value == "me" or value.lower() == me
        raise _bad(self.q)

    def contains(self, field: str, value: str) -> Predicate:
        if field == "name":
            return lambda f: word_prefix_match(f.name, value)
        if field == "mimeType":
            return lambda f: value in f.mime_type
        if field == "fullText":
            return lambda f: (word_prefix_match(f.name, value)
                              or word_prefix_match(f.description, value))
        raise _bad(self.q)

    def has(self, field: str) -> Predicate:
        if field not in ("appProperties", "properties"):
            raise _bad(self.q)
        self.expect("punct", "{")
        self.expect("word", "key")
        self.expect("op", "=")
        key = self.expect("str")
        self.expect("word", "and")
        self.expect("word", "value")
        self.expect("op", "=")
        val = self.expect("str")
        self.expect("punct", "}")
        attr = "app_properties" if field == "appProperties" else "properties"
        return lambda f: getattr(f, attr).get(key) == val

    def compare(self, field: str, op: str, vkind: str, value: str) -> Predicate:
        if field in ("name", "mimeType", "description") and vkind == "str":
            attr = {"name": "name", "mimeType": "mime_type", "description": "description"}[field]
            if op == "=":
                return lambda f: getattr(f, attr) == value
            if op == "!=":
                return lambda f: getattr(f, attr) != value
            raise _bad(self.q)
        if field in ("trashed", "starred", "sharedWithMe") and vkind == "bool" \
                and op in ("=", "!="):
            want = value == "true"
            eq = op == "="
            if field == "sharedWithMe":
                return lambda f: (want is False) == eq
            return lambda f: (bool(getattr(f, field)) == want) == eq
        if field in _TIME_FIELDS and vkind == "str":
            attr = _TIME_FIELDS[field]
            t = parse_time(value)
            ops: dict[str, Callable[[int, int], bool]] = {
                "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
                "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
            fn = ops[op]
            return lambda f: fn(getattr(f, attr), t)
        raise _bad(self.q)


def compile_query(q: str | None, user_email: str,
                  aliases: dict[str, str] | None = None) -> Predicate:
    """A predicate for ``q`` (everything matches when ``q`` is empty); ``aliases``
    maps ids such as ``root`` in ``'root' in parents`` to real ids."""
    if not q or not q.strip():
        return lambda f: True
    return _Parser(q, user_email, aliases or {}).parse()


def mentions_trashed(q: str | None) -> bool:
    """Whether ``q`` has a ``trashed`` term (used by the hide-trashed option)."""
    if not q:
        return False
    try:
        return any(k == "word" and t == "trashed" for k, t in tokenize(q))
    except DriveError:
        return False


_SORT_KEYS = {
    "createdTime": lambda f: f.created, "modifiedTime": lambda f: f.modified,
    "modifiedByMeTime": lambda f: f.modified, "viewedByMeTime": lambda f: f.modified,
    "recency": lambda f: f.modified, "sharedWithMeTime": lambda f: 0,
    "name": lambda f: (f.name.lower(), f.name),
    "name_natural": lambda f: _natural(f.name),
    "folder": lambda f: (not f.is_folder, f.name.lower()),
    "quotaBytesUsed": lambda f: f.size or 0, "starred": lambda f: f.starred,
}


def _natural(name: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower())
            for p in re.split(r"(\d+)", name) if p]


def sort_files(files: list[FileRecord], order_by: str | None) -> list[FileRecord]:
    """``files`` in files.list's ``orderBy`` order (default: creation order); a bad
    ``orderBy`` is Drive's 400 Invalid Value."""
    out = sorted(files, key=lambda f: f.seq)  # default: creation order
    if not order_by:
        return out
    keys = []
    for part in order_by.split(","):
        words = part.split()
        if not words or len(words) > 2 or words[0] not in _SORT_KEYS or \
                (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise invalid("Invalid Value", location="orderBy")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    for key, desc in reversed(keys):
        out.sort(key=_SORT_KEYS[key], reverse=desc)
    return out
