"""English words as PostgreSQL's `english` text search configuration sees them.

The service matches a query against a memory with `to_tsvector('english', ...)`:
Snowball's English stemmer after dropping Snowball's English stop words
(PostgreSQL's `english.stop` is that list). The data checker and the BM25
reference use the same two pieces, so "shares no word" means the same thing
to the checker, to BM25 and to the service.
"""

from __future__ import annotations

import re

import snowballstemmer

# PostgreSQL's share/tsearch_data/english.stop (Snowball's English stop list).
_ENGLISH_STOP = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what
    which who whom this that these those am is are was were be been being have has had
    having do does did doing a an the and but if or because as until while of at by for
    with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how
    all any both each few more most other some such no nor not only own same so than too
    very s t can will just don should now
"""
STOP_WORDS = frozenset(_ENGLISH_STOP.split())

_WORD = re.compile(r"[a-z0-9]+")
_STEMMER = snowballstemmer.stemmer("english")


def terms(text: str) -> list[str]:
    """The stemmed content words of `text`, in order, repeats kept (for BM25)."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]
    return list(_STEMMER.stemWords(words))
