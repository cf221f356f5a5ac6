"""MIMIC-CXR radiology reports: sectioning with the official rules, and prompt-text cleaning.

Pure functions only (no file system): :mod:`raygen.data.sections` walks the report tree and calls these.

Report format (docs/mimic-cxr.md section 4): the first line is ``FINAL REPORT`` after many spaces; every
following line starts with one space; a blank line holds a single space, so paragraphs are separated
by ``"\\n \\n"``; headers are upper-case words followed by a colon; de-identified text is ``___``.

Sectioning follows the official MIT-LCP/mimic-cxr ``section_parser.py`` rule for rule (our own
implementation, so that our sectioned CSV matches the official ``mimic_cxr_sectioned.csv``):

1. a header is ``\\n`` + one space + characters from ``A-Z ()/,-`` + ``:`` + one whitespace character;
2. no header at all: one ``full report`` section holding the whole text;
3. else a ``preamble`` runs up to the first header; each header's content runs from after its colon and
   whitespace to the start of the next header, and the search for that next header starts at the first
   newline at or after the content start (text on the header's own line never opens a section);
4. names are normalised (:func:`normalize_section_name`);
5. impression / findings sections holding only whitespace are dropped;
6. with neither impression nor findings left, everything after the first paragraph break of the last
   section becomes a ``last_paragraph`` section;
7. per study, the LAST occurrence of each of :data:`SECTIONED_COLUMNS` is kept (stripped).

The prompt text for the generator is then the first present section of a configurable fallback order
(the paper: impression only), cleaned by :func:`clean_prompt_text` (whitespace collapsed, punctuation,
digits and case kept, appended notification / communication text removed, ``___`` dropped).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Sectioning (the official rules)
# --------------------------------------------------------------------------------------------------

# Rule 1. Lower-case letters, digits and periods break a match, so "\n Findings:" or "\n 1. LUNGS:" are
# not headers. The trailing \s may be the newline itself (header alone on its line).
HEADER_RE = re.compile(r"\n ([A-Z ()/,-]+):\s")

# A blank line in a MIMIC report holds a single space.
PARAGRAPH_BREAK = "\n \n"

# Columns of the official mimic_cxr_sectioned.csv after ``study``, also the official prompt priority.
SECTIONED_COLUMNS: tuple[str, ...] = ("impression", "findings", "last_paragraph", "comparison")
CSV_HEADER: tuple[str, ...] = ("study", *SECTIONED_COLUMNS)

# Rule 4a, the exact-match table: normalised name -> the spellings seen in MIMIC-CXR headers
# (lower-cased, stripped), misspellings included. Same content as the official table.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "preamble": ("preamble",),
    "impression": (
        "impression",
        "conclusion",
        "findings and impression",
        "findings/impression",
        "findings/ impression",
        "impresson",
        "imprression",
        "imoression",
        "impressoin",
        "imprssion",
        "impresion",
        "imperssion",
        "mpression",
        "impession",
        # The official table maps the truncated "ndication" to impression; kept for fidelity.
        "ndication",
    ),
    "findings": (
        "findings",
        "finding",
        "findins",
        "findindgs",
        "findgings",
        "findngs",
        "findnings",
        "finidngs",
        "reference findings",
        "chest, two views",
    ),
    "comparison": (
        "comparison",
        "comparisons",
        "reference exam",
        "comparison exam",
        "comparison film",
        "comparision",
        "comparsion",
        "comparrison",
        "comparisions",
    ),
    "indication": (
        "indication",
        "reason for examination",
        "reason for exam",
        "clinical indication",
        "idication",
    ),
    "history": ("history", "clinical history", "clinical information", "patient history", "pfi"),
    "examination": ("examination", "exam", "type of examination"),
    "technique": ("technique",),
    "notification": ("notification",),
    "recommendations": ("recommendations", "recommendation(s)", "recommendation"),
    "addendum": ("addendum",),
    "date": ("date",),
    "comment": ("comment",),
    "wet read": ("wet read", "wetread"),
}
SECTION_ALIASES: dict[str, str] = {spelling: name for name, spellings in _SPELLINGS.items() for spelling in spellings}

# Rule 4b: a name containing one of these words becomes that word, checked in this order
# ("findings and impression"-like names not in the table become impression).
MAIN_SECTIONS: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")

# Rule 4c: a name containing a phrase that describes the whole study is a findings section
# (e.g. "chest, pa lateral", "portable ap chest"). Plain substring search, as the official code.
VIEW_PHRASES: tuple[str, ...] = (
    "chest",
    "portable",
    "pa and lateral",
    "lateral and pa",
    "ap and lateral",
    "lateral and ap",
    "frontal and",
    "two views",
    "frontal view",
    "pa view",
    "ap view",
    "one view",
    "lateral view",
    "bone window",
    "frontal upright",
    "frontal semi-upright",
    "ribs",
    "pa and lat",
)
_VIEW_RE = re.compile("|".join(re.escape(p) for p in VIEW_PHRASES))


@dataclass(frozen=True)
class Section:
    """One section of a report.

    ``name`` is normalised (``impression``, ``findings``, ``preamble``, ``full report``,
    ``last_paragraph``, ...); ``header`` is the header as written, lower-cased and stripped (equal to
    ``name`` for the synthetic ``preamble`` / ``full report`` / ``last_paragraph``); ``text`` is the
    unstripped content; ``start`` its character offset in the report.
    """

    name: str
    header: str
    text: str
    start: int


def normalize_section_name(header: str) -> str:
    """Normalise one header name (rule 4): exact table, then main words, then view phrases.

    >>> normalize_section_name("IMPRESSON")
    'impression'
    >>> normalize_section_name("PORTABLE AP CHEST")
    'findings'
    """
    name = header.lower().strip()
    if name in SECTION_ALIASES:
        return SECTION_ALIASES[name]
    for word in MAIN_SECTIONS:
        if word in name:
            return word
    if _VIEW_RE.search(name):
        return "findings"
    return name


def split_sections(text: str) -> list[Section]:
    """Split a report into sections with the official rules 1-6 (see the module docstring).

    ``text`` is the decoded report with ``\\n`` line ends. Returns at least one section.
    """
    raw = _split_raw(text)
    sections = [Section(normalize_section_name(h), h.lower().strip(), t, s) for h, t, s in raw]
    # Rule 5: an empty impression/findings is usually a report title ("CHEST, PA LATERAL:" followed
    # by another header) or one of two findings headers.
    sections = [s for s in sections if not (s.name in ("impression", "findings") and not s.text.strip())]
    names = {s.name for s in sections}
    if "impression" not in names and "findings" not in names:
        sections = _split_last_paragraph(sections)
    return sections


def _split_raw(text: str) -> list[tuple[str, str, int]]:
    """Rules 1-3: (header as written, content, content start) in report order."""
    match = HEADER_RE.search(text)
    if match is None:
        return [("full report", text, 0)]
    out = [("preamble", text[: match.start(1)], 0)]
    while match is not None:
        header, start = match.group(1), match.end()
        # Skip to the first newline at/after the content start: stops text on the header's own line
        # (e.g. "CHEST, PA LATERAL:  PORTABLE AP CHEST: ...") from opening a section.
        newline = text.find("\n", start)
        match = HEADER_RE.search(text, start if newline == -1 else newline)
        end = len(text) if match is None else match.start()
        out.append((header, text[start:end], start))
    return out


def _split_last_paragraph(sections: list[Section]) -> list[Section]:
    """Rule 6: move everything after the first paragraph break of the last section to ``last_paragraph``."""
    last = sections[-1]
    head, sep, tail = last.text.partition(PARAGRAPH_BREAK)
    if not sep:
        return sections
    kept = Section(last.name, last.header, head, last.start)
    para = Section("last_paragraph", "last_paragraph", tail, last.start + len(head) + len(sep))
    return [*sections[:-1], kept, para]


def last_sections(sections: Iterable[Section], names: Sequence[str] = SECTIONED_COLUMNS) -> dict[str, str]:
    """Rule 7: the stripped text of the LAST section with each name, ``""`` where absent."""
    out = dict.fromkeys(names, "")
    for section in sections:
        if section.name in out:
            out[section.name] = section.text.strip()
    return out


def section_report(text: str) -> dict[str, str]:
    """One report's row of the sectioned CSV (without ``study``): :data:`SECTIONED_COLUMNS` -> text."""
    return last_sections(split_sections(text))


# --------------------------------------------------------------------------------------------------
# Custom rules for malformed reports
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SectionRule:
    """Use the last section with this normalised name as the study's text (a mis-named section)."""

    name: str


@dataclass(frozen=True)
class SpanRule:
    """Use ``text[start:end]`` of the report as the study's text (unparseable layout; 0, 0 = none)."""

    start: int
    end: int


CustomRule = SectionRule | SpanRule

# Study id (with its "s" prefix) -> rule. The official code hard-codes 54 such ids for malformed real
# reports (its custom_mimic_cxr_rules: 23 section-name rules, 31 spans). They are MIMIC-derived
# identifiers, so they are deliberately NOT listed here; a user with credentialed access can fill this
# table from the official repository. The rule replaces the prompt text only (source "custom"); the
# sectioned CSV row stays as parsed. (The official code instead leaves these studies out of
# mimic_cxr_sectioned.csv.)
CUSTOM_RULES: dict[str, CustomRule] = {}


def apply_custom_rule(text: str, sections: Sequence[Section], rule: CustomRule) -> str:
    """The raw text a custom rule selects (stripped; ``""`` if the named section is absent)."""
    if isinstance(rule, SpanRule):
        return text[rule.start : rule.end].strip()
    return last_sections(sections, (rule.name,))[rule.name]


# --------------------------------------------------------------------------------------------------
# Prompt text
# --------------------------------------------------------------------------------------------------

# An appended communication block that starts with its own label, e.g. "... NOTIFICATION: Dr. ___ was
# paged ..." on the impression's line, where rule 1 cannot see it as a header. Cut to the end.
_INLINE_LABEL_RE = re.compile(
    r"\b(?:notifications?|communications?|recommendations?|recommendation\(s\)|critical results?)\s*:",
    re.IGNORECASE,
)
# A communication sentence needs a communication verb and a person / channel ...
_COMM_VERB_RE = re.compile(
    r"\b(?:discuss(?:ed|ing)?|communicated?|communication|conveyed|relayed|telephoned|paged|notified|"
    r"notification|informed|called|spoke|spoken|emailed|e-mailed|reported\s+(?:to|by)|d/w)\b",
    re.IGNORECASE,
)
_COMM_TARGET_RE = re.compile(
    r"\b(?:drs?\b|doctor|physician|clinician|provider|nurse|rn\b|np\b|team|service|house\s*staff|"
    r"resident|attending|radiologist|pcp\b|telephone|phone|pager|in\s+person|e-?mail)",
    re.IGNORECASE,
)
# ... or one of these phrases, which only occur in communication statements.
_COMM_STRONG_RE = re.compile(
    r"\b(?:discussed\s+with|communicated\s+(?:to|with)|critical\s+results?|dashboard|wet\s+read|"
    r"after\s+(?:the\s+)?discovery)\b",
    re.IGNORECASE,
)

# Words ending in "." that do not end a sentence.
_ABBREVIATIONS = frozenset(
    {
        "dr",
        "drs",
        "mr",
        "mrs",
        "ms",
        "st",
        "vs",
        "approx",
        "e.g",
        "i.e",
        "cf",
        "fig",
    }
)
_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)")
_LIST_MARKER_RE = re.compile(r"\d{1,2}[.)]?")

# Placeholders: "(___)", a person "Dr. ___", a date/place "on ___", then any left-over "___".
_PLACEHOLDER_RES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\(\s*_{2,}\s*\)"), " "),
    # "Compared to (the prior radiograph from) ___, ..." says nothing without its date: drop it whole.
    (
        re.compile(
            r"\b(?:as\s+)?(?:compared|comparison)\s+(?:to|with)\s+(?:(?:the|a|prior|previous|recent)\s+)*"
            r"(?:(?:study|exam|examination|radiograph|film|ct)\s+)?(?:(?:of|from|on|dated)\s+)?_{2,}\s*,?",
            re.IGNORECASE,
        ),
        " ",
    ),
    (re.compile(r"\b(?:Drs?|Mrs?|Ms)\.?\s+_{2,}", re.IGNORECASE), " "),
    (re.compile(r"\b(?:on|dated|from|at|since|of|in)\s+_{2,}", re.IGNORECASE), " "),
    (re.compile(r"_{2,}"), " "),
)
_TIDY_RES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\s+"), " "),
    (re.compile(r"\(\s*\)"), " "),  # parentheses emptied by placeholder removal
    (re.compile(r"\s+([.,;:!?)])"), r"\1"),  # "effusion ." -> "effusion."
    (re.compile(r"([,;:])(?:\s*[,;:])+"), r"\1"),  # ", ," -> ","
    (re.compile(r"[,;:]\s*(?=[.!?])"), ""),  # ", ." -> "."
    (re.compile(r"([.!?])\s*[,;:]"), r"\1"),  # "., worse" -> ". worse"
    (re.compile(r"\.(?:\s*\.)+"), "."),  # ". ." -> "."
    (re.compile(r"\s+"), " "),
)
_LETTER_RE = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class CleanedText:
    """A cleaned prompt text and whether communication text was removed from it."""

    text: str
    stripped_notification: bool


@dataclass(frozen=True)
class Prompt:
    """The prompt chosen for one study: cleaned ``text``, the ``source`` section it came from."""

    text: str
    source: str
    stripped_notification: bool


def split_sentences(text: str) -> list[str]:
    """Split single-line text into sentences, keeping their punctuation.

    A ``.``/``!``/``?`` followed by whitespace ends a sentence unless the word before it is a title
    (``Dr.``), a list number at the sentence start (``1.``), or the next word starts lower-case
    (``10 a.m. on``).
    """
    out, start = [], 0
    for match in _SENTENCE_END_RE.finditer(text):
        word_start = text.rfind(" ", start, match.start()) + 1
        word = text[word_start : match.start()].lower().lstrip("(")
        rest = text[match.end() :].lstrip()
        if word in _ABBREVIATIONS or (rest and rest[0].islower()):
            continue
        if not text[start:word_start].strip() and _LIST_MARKER_RE.fullmatch(word):
            continue
        out.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def is_communication(sentence: str) -> bool:
    """True for a sentence that reports who was told about the findings, not the findings.

    >>> is_communication("These findings were communicated to Dr. ___ by telephone at 10:00.")
    True
    >>> is_communication("No pneumothorax.")
    False
    """
    if _COMM_STRONG_RE.search(sentence):
        return True
    return bool(_COMM_VERB_RE.search(sentence) and _COMM_TARGET_RE.search(sentence))


def strip_communication(text: str) -> CleanedText:
    """Remove an inline ``NOTIFICATION:``-style block (to the end) and communication sentences.

    ``text`` must already be on one line (whitespace collapsed).
    """
    label = _INLINE_LABEL_RE.search(text)
    cut = text[: label.start()] if label else text
    if not (_COMM_VERB_RE.search(cut) or _COMM_STRONG_RE.search(cut)):  # the common case, fast path
        cut = cut.strip()
        return CleanedText(cut, stripped_notification=cut != text.strip())
    kept = [s for s in split_sentences(cut) if not is_communication(s)]
    out = " ".join(kept)
    return CleanedText(out, stripped_notification=out != text.strip())


def drop_placeholders(text: str) -> str:
    """Remove ``___`` de-identification placeholders with the title or preposition they belong to."""
    if "__" in text:
        for pattern, repl in _PLACEHOLDER_RES:
            text = pattern.sub(repl, text)
    return tidy_text(text)


def tidy_text(text: str) -> str:
    """Collapse whitespace and repair punctuation left behind by removals."""
    for pattern, repl in _TIDY_RES:
        text = pattern.sub(repl, text)
    text = text.strip().lstrip(",;:.!?) ").strip()
    # A removal at the very start ("Compared to ___, there is ...") leaves a lower-case first word.
    return text[:1].upper() + text[1:]


def clean_prompt_text(text: str, strip_notification: bool = True) -> CleanedText:
    """Prompt text from a section: one line, punctuation / digits / case kept, ``___`` dropped.

    With ``strip_notification``, appended communication text ("NOTIFICATION: ...", "These findings
    were discussed with Dr. ___ at ...") is removed. Returns ``""`` text when nothing usable (no letter)
    is left.
    """
    text = re.sub(r"\s+", " ", text).strip()
    stripped = False
    if strip_notification:
        cleaned = strip_communication(text)
        text, stripped = cleaned.text, cleaned.stripped_notification
    text = drop_placeholders(text)
    if not _LETTER_RE.search(text):
        text = ""
    return CleanedText(text, stripped)


def choose_prompt(
    row: Mapping[str, str],
    fallback: Sequence[str] = ("impression",),
    strip_notification: bool = True,
) -> Prompt | None:
    """The first section in ``fallback`` order whose cleaned text is usable, or None.

    ``row`` maps section names to raw (stripped) text, as :func:`last_sections` returns. A section
    that cleans to nothing (e.g. an impression that only says who was called) falls through.
    """
    for source in fallback:
        raw = row.get(source, "")
        if not raw:
            continue
        cleaned = clean_prompt_text(raw, strip_notification)
        if cleaned.text:
            return Prompt(cleaned.text, source, cleaned.stripped_notification)
    return None


# --------------------------------------------------------------------------------------------------
# Rendering (the demo dataset and the tests write reports in the MIMIC layout)
# --------------------------------------------------------------------------------------------------

REPORT_WIDTH = 78  # MIMIC report lines wrap before 80 columns
_TITLE_INDENT = 33  # spaces before "FINAL REPORT" on the first line


def render_report(
    sections: Sequence[tuple[str | None, str]],
    addendum: str | None = None,
    width: int = REPORT_WIDTH,
) -> str:
    """Lay out a report as MIMIC-CXR does.

    ``sections`` holds (HEADER or None, text) in order; paragraphs in ``text`` are separated by a blank
    line. A one-paragraph section starts on its header's line (``" INDICATION:  text"``); longer ones
    start on the line after it. ``addendum``, when given, precedes the report and is separated from it
    by a line of underscores. Every line after the title starts with one space; blank lines are one
    space; the text ends with a newline.
    """
    lines: list[str] = []
    if addendum is not None:
        lines.append(" " * _TITLE_INDENT + "ADDENDUM")
        lines.extend(_paragraph_lines(addendum, width))
        lines += [" ", " " + "_" * (width - 1)]
    lines.append(" " * _TITLE_INDENT + "FINAL REPORT")
    for i, (header, text) in enumerate(sections):
        if i:
            lines.append(" ")
        paragraphs = _paragraphs(text)
        if header is None:
            lines.extend(_paragraph_lines(text, width))
        elif len(paragraphs) == 1:
            lines.extend(
                textwrap.wrap(
                    paragraphs[0],
                    width,
                    initial_indent=f" {header}:  ",
                    subsequent_indent=" ",
                    break_on_hyphens=False,
                )
            )
        else:
            lines += [f" {header}:", " "]
            lines.extend(_paragraph_lines(text, width))
    return "\n".join(lines) + "\n"


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _paragraph_lines(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for j, paragraph in enumerate(_paragraphs(text)):
        if j:
            lines.append(" ")
        lines.extend(
            textwrap.wrap(
                paragraph,
                width,
                initial_indent=" ",
                subsequent_indent=" ",
                break_on_hyphens=False,
            )
        )
    return lines


def decode_report(data: bytes) -> str:
    """Report bytes as text: strict UTF-8 (raises ``UnicodeDecodeError``), universal newlines.

    A UTF-8 byte-order mark is dropped; ``\\r\\n`` and ``\\r`` become ``\\n`` as Python's text mode
    (which the official code used) does.
    """
    text = data.decode("utf-8-sig")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
