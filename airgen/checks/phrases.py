"""A constraint's text, as a judge or a rule writes it, read into a check: precision first. A text that is not
clearly one of the kinds (a tone, examples to give, "concise") gets none, and so does a limit on a part of the
response (each sentence, the title, a paragraph) rather than the whole of it.

Each reader below takes the lower-cased, single-spaced text and returns (check id, arguments) or None. The patterns
read texts of a constraint's length and are linear (no nested repetition), so even a long text costs little.
"""
from __future__ import annotations

import re
from typing import Any, Callable

_SMALL = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
          "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "a hundred": 100,
          "one hundred": 100}
NUM = r"(\d{1,5}(?:,\d{3})?|" + "|".join(sorted(_SMALL, key=len, reverse=True)) + r")"
# A quoted word or phrase; an apostrophe inside a word ("don't") opens and closes nothing.
QUOTED = r"(?<!\w)[\"'“‘]([^\"“”‘’']{1,60}?)[\"'”’](?!\w)"
_NEGATION = re.compile(r"\b(?:not|never|no|avoid|without|cannot)\b|n't\b")
# Words that aim a limit at a part of the response, not the whole of it.
_PART = re.compile(r"\b(?:each|every|per|sentences?|paragraphs?|bullets?|bullet points?|items?|points?|lines?|"
                   r"titles?|headings?|headers?|sections?|introduction|conclusion|summary|first|last|opening|closing|"
                   r"list|steps?|tips?|examples?|quotes?|questions?)\b")

Reading = tuple[str, dict[str, Any]] | None


def number(text: str) -> int:
    return int(text.replace(",", "")) if text[0].isdigit() else _SMALL[text]


def _bounded(text: str, unit: str) -> tuple[str, int] | None:
    """(relation, n) of a limit on the count of `unit` ("words", "sentences"): "at most", "fewer than", "no more
    than", "at least", "more than" and their kin, a negation before the phrase turning it round."""
    m = re.search(
        r"\b(at most|no more than|not more than|up to|a maximum of|maximum of|maximum|max\.?|within|under|below|"
        r"fewer than|less than|shorter than|no longer than|not exceed(?:ing)?|exceed(?:ing)?|at least|no fewer than|"
        r"no less than|not fewer than|not less than|a minimum of|minimum of|minimum|more than|over|longer than)"
        rf" {NUM} {unit}\b", text)
    if m is None:
        m2 = re.search(rf"\b{NUM} {unit} or (fewer|less|more)\b", text)
        if m2 is None:
            return None
        n = number(m2.group(1))
        return ("less than", n + 1) if m2.group(2) in ("fewer", "less") else ("at least", n)
    phrase, n = m.group(1), number(m.group(2))
    negated = _NEGATION.search(text[:m.start()]) is not None and not phrase.startswith(("no ", "not "))
    if phrase in ("under", "below", "fewer than", "less than", "shorter than"):
        relation = ("at least", n) if negated else ("less than", n)
    elif phrase in ("more than", "over", "longer than", "exceed", "exceeding"):
        relation = ("less than", n + 1) if negated else ("at least", n + 1)
    elif phrase in ("at least", "no fewer than", "no less than", "not fewer than", "not less than", "a minimum of",
                    "minimum of", "minimum"):
        relation = ("at least", n)
    else:  # at most, no more than, up to, within, maximum, not exceed(ing)
        relation = ("less than", n + 1)
    return relation


def _whole(text: str, unit: str) -> bool:
    """The limit is on the whole response: no word aims it at a part (the unit itself aside)."""
    rest = re.sub(rf"\b{unit}\b", "", text)
    return _PART.search(rest) is None


def word_limit(text: str) -> Reading:
    if not re.search(r"\bwords?\b", text) or re.search(r"\b(?:about|around|roughly|approximately|nearly|close to)\b",
                                                        text) or not _whole(text, "words?"):
        return None
    if re.search(r"\b(?:letters|characters)\b", text):
        return None
    m = (re.search(rf"\bbetween {NUM} and {NUM} words\b", text)
         or re.search(rf"\bno fewer than {NUM} and no more than {NUM} words\b", text)
         or re.search(rf"\bat least {NUM} and (?:at most|no more than) {NUM} words\b", text)
         or re.search(rf"\b{NUM} ?(?:to|-|–) ?{NUM} words\b", text))
    if m:
        low, high = number(m.group(1)), number(m.group(2))
        return ("airgen:number_words_between", {"low": low, "high": high}) if low <= high else None
    m = re.search(rf"\bexactly {NUM} words\b", text)
    if m:
        n = number(m.group(1))
        return "airgen:number_words_between", {"low": n, "high": n}
    bound = _bounded(text, "words")
    if bound is None:
        return None
    return "length_constraints:number_words", {"num_words": bound[1], "relation": bound[0]}


def sentence_limit(text: str) -> Reading:
    if not re.search(r"\bsentences?\b", text) or not _whole(text, "sentences?") or re.search(r"\bwords\b", text):
        return None
    bound = _bounded(text, "sentences")
    if bound is None:
        return None
    return "length_constraints:number_sentences", {"num_sentences": bound[1], "relation": bound[0]}


def paragraph_count(text: str) -> Reading:
    if not re.search(r"\bparagraphs\b", text) or not _whole(text, "paragraphs?"):
        return None
    if re.search(r"\*\*\*|markdown divider", text):
        m = re.search(rf"\b(?:exactly )?{NUM} paragraphs\b", text)
        return ("length_constraints:number_paragraphs", {"num_paragraphs": number(m.group(1))}) if m else None
    m = re.search(rf"\b(?:exactly|in|into|of|with|use|write|contain|consist of|have|has|organized in|divided into) "
                  rf"{NUM} (?:separate |distinct |short |clear |well-structured )?paragraphs\b", text)
    if m and not re.search(r"\b(?:at least|at most|no more than|up to|fewer|more than|less than)\b", text):
        return "airgen:number_paragraphs", {"num_paragraphs": number(m.group(1)), "relation": "exactly"}
    bound = _bounded(text, "paragraphs")
    if bound is None:
        return None
    return "airgen:number_paragraphs", {"num_paragraphs": bound[1], "relation": bound[0]}


def bullet_count(text: str) -> Reading:
    m = re.search(rf"\b(?:exactly |use |in |with |as |into |list |include |contain |of )?{NUM} "
                  r"(?:markdown )?bullet(?:ed)?(?: points?| items?| lists?)?\b", text)
    if m is None or re.search(r"\b(?:at least|at most|no more than|up to|fewer|more than|less than|each|every|per|"
                              r"words)\b", text):
        return None
    return "detectable_format:number_bullet_lists", {"num_bullets": number(m.group(1))}


def _quoted(text: str) -> list[str]:
    return [q.strip() for q in re.findall(QUOTED, text) if q.strip()]


def keyword_frequency(text: str) -> Reading:
    words = _quoted(text)
    if len(words) != 1:
        return None
    m = re.search(rf"\b(at least|no fewer than|at most|no more than|fewer than|less than|more than) {NUM} times\b",
                  text)
    if m is None or not re.search(r"\b(?:use|include|mention|repeat|appear|occur)s?\b", text):
        return None
    phrase, n = m.group(1), number(m.group(2))
    relation = {"at least": ("at least", n), "no fewer than": ("at least", n), "more than": ("at least", n + 1),
                "fewer than": ("less than", n), "less than": ("less than", n)}.get(phrase, ("less than", n + 1))
    return "keywords:frequency", {"keyword": words[0], "frequency": relation[1], "relation": relation[0]}


def forbidden(text: str) -> Reading:
    words = _quoted(text)
    if not words or re.search(r"\btimes\b", text) or not re.search(
            r"\b(?:do not|don't|never|avoid|without|must not|should not|cannot|refrain from|exclude|not use|not "
            r"include|not mention|not contain|no mention of)\b", text):
        return None
    if not re.search(r"\b(?:words?|terms?|phrases?|use|using|mention|mentioning|include|including|contain)\b", text):
        return None
    return "keywords:forbidden_words", {"forbidden_words": words}


def keywords(text: str) -> Reading:
    words = _quoted(text)
    if not words or _NEGATION.search(text) or re.search(r"\btimes\b", text):
        return None
    if re.search(r"\b(?:like|such as|similar|sparingly|related|e\.g\.|for example|synonyms?|or)\b", text):
        return None  # examples of words, or a choice between them: no word the answer must hold
    if not re.search(r"\b(?:include|includes|including|use|uses|using|mention|mentions|mentioning|contain|contains|"
                     r"incorporate|feature|features)\b", text):
        return None
    return "keywords:existence", {"keywords": words}


def letter_frequency(text: str) -> Reading:
    m = re.search(rf"\bthe letter [\"'“‘]?([a-z])[\"'”’]? (?:should |must )?(?:appear |occur |be used )?"
                  rf"(at least|no fewer than|at most|no more than|fewer than|less than) {NUM} times\b", text)
    if m is None:
        return None
    phrase, n = m.group(2), number(m.group(3))
    relation = ("at least", n) if phrase in ("at least", "no fewer than") else \
        ("less than", n) if phrase in ("fewer than", "less than") else ("less than", n + 1)
    return "keywords:letter_frequency", {"letter": m.group(1), "let_frequency": relation[1],
                                         "let_relation": relation[0]}


_MARKS = {"comma": ",", "colon": ":", "semicolon": ";", "exclamation mark": "!", "exclamation point": "!",
          "question mark": "?"}
_MARK = r"(?:" + "|".join(_MARKS) + r")s?"


def no_marks(text: str) -> Reading:
    """Punctuation the whole response must go without: commas alone (IFEval's kind), or a list of marks."""
    m = re.search(r"\b(?:no|without|avoid|never use|not use|don't use|do not use|refrain from using|zero|free of)"
                  rf"(?: using)?(?: any)? ({_MARK}(?:(?:,| or| and| nor)(?: or| and)?(?: any)? {_MARK})*)\b", text)
    if m is None or _PART.search(re.sub(_MARK, "", text)) is not None:
        return None
    named = set(re.findall(_MARK, text))
    if named != set(re.findall(_MARK, m.group(1))):
        return None  # a mark named outside the list: one to use, perhaps
    marks = sorted({_MARKS[name.removesuffix("s")] for name in named})
    return ("punctuation:no_comma", {}) if marks == [","] else ("airgen:no_symbols", {"symbols": marks})


_EVERY_SENTENCE = re.compile(r"\b(?:each|every|all|any|no|your) (?:single |individual |one )?sentences?\b|"
                             r"^(?:keep )?sentences\b|\bsentences (?:must|should|may|can|of)\b")
_NOT_EVERY = re.compile(r"\b(?:first|last|opening|closing|final|introductory|concluding|title|heading|bullets?|"
                        r"sections?|list|items?|points?|summary)\b")


def sentence_words(text: str) -> Reading:
    """A limit on every sentence's words: "no sentence longer than 25 words", "keep each sentence under 20 words"."""
    if not _EVERY_SENTENCE.search(text) or _NOT_EVERY.search(text) or re.search(r"\bparagraphs?\b", text):
        return None
    bound = _bounded(text, "words")
    if bound is None or bound[0] != "less than":
        return None
    return "airgen:sentence_words", {"max_words": bound[1] - 1}


def paragraph_sentences(text: str) -> Reading:
    """A limit on every paragraph's sentences: "no paragraph may have more than 4 sentences"."""
    if not re.search(r"\b(?:each|every|all|any|no|your) (?:single |individual |one )?paragraphs?\b", text) or \
            _NOT_EVERY.search(text) or re.search(r"\bwords?\b", text):
        return None
    bound = _bounded(text, "sentences")
    if bound is None or bound[0] != "less than":
        return None
    return "airgen:paragraph_sentences", {"max_sentences": bound[1] - 1}


_CASE_WHOLE = r"(?:entire|whole|all of the|full)? ?(?:response|answer|reply|output|text)"


def lowercase(text: str) -> Reading:
    if _PART.search(text) is not None:
        return None
    if re.search(r"\b(?:all|only|entirely|completely|exclusively) (?:in )?lower ?case\b|\blower ?case (?:letters )?"
                 r"(?:only|throughout)\b|\bno (?:capital|uppercase|upper case) letters\b|\bwithout (?:any )?"
                 r"(?:capital|uppercase) letters\b|" + _CASE_WHOLE + r" (?:must be |should be |in )?(?:written )?"
                 r"(?:in |using )?(?:all )?lower ?case\b", text):
        return "change_case:english_lowercase", {}
    return None


def uppercase(text: str) -> Reading:
    if _PART.search(text) is not None or re.search(r"\bwords\b", text):
        return None
    if re.search(r"\b(?:all|only|entirely|completely|exclusively) (?:in )?(?:upper ?case|capital letters|caps|"
                 r"capitals)\b|\bin all caps\b|" + _CASE_WHOLE + r" (?:must be |should be |in )?(?:written )?"
                 r"(?:in |using )?(?:all )?(?:upper ?case|capital letters)\b", text):
        return "change_case:english_capital", {}
    return None


def capital_words(text: str) -> Reading:
    if not re.search(r"\b(?:all capital letters|all caps|all-caps|uppercase|upper case|capitalized)\b", text):
        return None
    bound = _bounded(text, r"(?:words|all-caps words|uppercase words|capitalized words)")
    if bound is None:
        return None
    return "change_case:capital_word_frequency", {"capital_frequency": bound[1], "capital_relation": bound[0]}


def title(text: str) -> Reading:
    if "<<" in text or re.search(r"\bdouble angular brackets\b", text):
        return ("detectable_format:title", {}) if re.search(r"\btitle\b", text) else None
    return None


def postscript(text: str) -> Reading:
    if re.search(r"\bp\.\s?p\.\s?s\b", text):
        return "detectable_content:postscript", {"postscript_marker": "P.P.S"}
    if re.search(r"\bp\.\s?s\.|\bpostscript\b", text) and not _NEGATION.search(text):
        return "detectable_content:postscript", {"postscript_marker": "P.S."}
    return None


def end_phrase(text: str) -> Reading:
    m = re.search(r"\b(?:end|ends|finish|finishes|conclude|concludes|close|closes)(?: your| the)?(?: entire)?"
                  r"(?: response| answer| reply| text)? with(?: the)?(?: exact)?(?: phrase| sentence| words?| line)?"
                  r":? " + QUOTED, text)
    if m is None or re.search(r"\b(?:each|every|per|paragraph|section|sentence)\b", text[:m.start()]):
        return None
    return "startend:end_checker", {"end_phrase": m.group(1).strip()}


def quotation(text: str) -> Reading:
    if re.search(r"\b(?:wrap|enclose|put|surround)(?: your| the)? (?:entire|whole|full) (?:response|answer|reply|"
                 r"output) (?:in|with|within|inside) double quot", text):
        return "startend:quotation", {}
    return None


def json_format(text: str) -> Reading:
    if not re.search(r"\bjson\b", text) or re.search(r"\b(?:snippet|example|field|key|block within|inside|part|"
                                                       r"section|include a|includes a|contain a)\b", text):
        return None
    if re.search(r"\b(?:entire|whole|full)? ?(?:response|answer|reply|output)(?: must| should)? (?:be )?(?:formatted |"
                 r"written |given |provided |returned )?(?:as|in|in the form of|using) (?:valid |a valid |a )?json\b|"
                 r"\b(?:valid )?json format\b|\bformat (?:the |your )?(?:response|answer|output|reply) as (?:valid )?"
                 r"json\b|\b(?:only|entirely|solely) (?:in )?(?:valid )?json\b", text):
        return "detectable_format:json_format", {}
    return None


def placeholders(text: str) -> Reading:
    m = re.search(rf"\bat least {NUM} placeholders?\b", text)
    if m is None or not re.search(r"square brackets|\[", text):
        return None
    return "detectable_content:number_placeholders", {"num_placeholders": number(m.group(1))}


def highlights(text: str) -> Reading:
    m = re.search(rf"\bat least {NUM} (?:sections?|parts?|phrases?)\b.*\bhighlight|\bhighlight at least {NUM} "
                  r"(?:sections?|parts?|phrases?)\b", text)
    if m is None or not re.search(r"\bmarkdown\b|\*", text):
        return None
    n = number(m.group(1) or m.group(2))
    return "detectable_format:number_highlighted_sections", {"num_highlights": n}


def sections(text: str) -> Reading:
    m = re.search(rf"\b{NUM} sections\b", text)
    marker = re.search(r"\b(?:mark|label|begin|start|title)\w*\b[^.]{0,40}? with [\"'“]?(section|part|chapter)"
                       r"[\"'”]?\s*(?:x|n|\d)", text)
    if m is None or marker is None:
        return None
    return "detectable_format:multiple_sections", {"section_spliter": marker.group(1).upper() if "section" in
                                                   marker.group(1) else marker.group(1).capitalize(),
                                                   "num_sections": number(m.group(1))}


LANGUAGES = {"english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it", "portuguese": "pt",
             "dutch": "nl", "russian": "ru", "chinese": "zh-cn", "japanese": "ja", "korean": "ko", "arabic": "ar",
             "hindi": "hi", "bengali": "bn", "turkish": "tr", "polish": "pl", "swedish": "sv", "finnish": "fi",
             "danish": "da", "norwegian": "no", "greek": "el", "hebrew": "he", "thai": "th", "vietnamese": "vi",
             "indonesian": "id", "ukrainian": "uk", "czech": "cs", "romanian": "ro", "hungarian": "hu",
             "persian": "fa", "urdu": "ur", "swahili": "sw", "tamil": "ta", "telugu": "te", "marathi": "mr",
             "gujarati": "gu", "kannada": "kn", "punjabi": "pa", "nepali": "ne"}
_LANGUAGE = "(" + "|".join(LANGUAGES) + ")"


def language(text: str) -> Reading:
    if _PART.search(text) is not None:
        return None
    m = re.search(rf"\b(?:respond|reply|answer|write|written|compose|composed)(?: only| entirely| exclusively| "
                  rf"solely)?(?: the (?:entire |whole )?(?:response|answer|reply))? in {_LANGUAGE}\b(?! \w+ (?:words|"
                  rf"terms|spelling|style))|\b(?:entire|whole) (?:response|answer|reply)(?: must| should)? (?:be )?"
                  rf"(?:written )?in {_LANGUAGE}\b|\bin {_LANGUAGE} only\b|\bonly in {_LANGUAGE}\b|\bno other "
                  rf"language than {_LANGUAGE}\b", text)
    if m is None:
        return None
    name = next(g for g in m.groups() if g)
    return "language:response_language", {"language": LANGUAGES[name]}


def constrained(text: str) -> Reading:
    if re.search(r"my answer is yes\.?[\"'”]?,? [\"'“]?my answer is no", text):
        return "detectable_format:constrained_response", {}
    return None


# In order: the narrower readings first (a count of a word's uses before the words it includes).
READERS: tuple[Callable[[str], Reading], ...] = (
    constrained, title, postscript, placeholders, highlights, sections, letter_frequency, keyword_frequency,
    capital_words, word_limit, sentence_limit, paragraph_count, sentence_words, paragraph_sentences, bullet_count,
    end_phrase, quotation, json_format, no_marks, lowercase, uppercase, language, forbidden, keywords,
)


def read(text: str) -> Reading:
    if len(text) > 2000:  # no constraint is this long: no reading of it is to be trusted
        return None
    plain = " ".join(text.replace("**", "").replace("__", "").split()).lower()
    for reader in READERS:
        found = reader(plain)
        if found is not None:
            return found
    return None
