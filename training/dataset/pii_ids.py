"""Patterns and validators for the identity kinds of PII scrubbing (used by `pii.py`): national
ids of several countries, passport and licence numbers, dates of birth, MAC addresses,
postcodes, obfuscated e-mails, and phone numbers validated by libphonenumber.

Precision first, as in pii.py: a bare number is an id only when its checksum validates (Spanish
DNI letter, French INSEE key, Indian Aadhaar Verhoeff, Swedish/Canadian Luhn, Finnish check
character, Brazilian CPF digits, Dutch 11-proof) or its shape is unmistakable (UK NINO, Italian
codice fiscale); otherwise the text must name it ("passport", "BSN", "date of birth").
"""

from __future__ import annotations

import re

import phonenumbers

# --- e-mails written to dodge a scraper ---------------------------------------------------------

_OPEN, _CLOSE = r"[\[({<]", r"[\])}>]"
_AT = rf"(?: ?{_OPEN} ?(?:at|ät|arroba|chez) ?{_CLOSE} ?| _at_ | (?:at|AT) | ?@ ?)"
_DOT = rf"(?: ?{_OPEN} ?(?:dot|punkt|point|punto) ?{_CLOSE} ?| _dot_ | (?:dot|DOT) | ?\. ?)"
_TLD_WORDS = r"(?:com|org|net|edu|gov|info|io|de|fr|es|it|nl|uk|ru|jp|ch|at|be|se|eu|co)"
# Either the at or a dot must be disguised (a plain address is pii._EMAIL's), and a worded
# "x at y dot com" must end in a known top-level domain, so prose ("look at it. Then") stays.
OBFUSCATED_EMAIL = re.compile(
    rf"(?i)(?<![\w.%+\-])[a-z0-9][a-z0-9._%+\-]{{0,63}}{_AT}[a-z0-9\-]{{1,63}}"
    rf"(?:{_DOT}[a-z0-9\-]{{1,63}}){{0,3}}{_DOT}(?:{_TLD_WORDS}|[a-z]{{2,6}}(?=\W|$))(?![\w\-])"
)


def obfuscated_email_ok(text: str) -> bool:
    """A disguised address, not a plain one nor prose: something other than '@' and '.' with
    no spaces (pii._EMAIL's job) must appear, and a worded at needs a worded or spaced dot."""
    if re.fullmatch(r"[^\s]+@[^\s]+", text):
        return False
    worded_at = re.search(r"(?i) (?:at) ", text) is not None
    return not worded_at or re.search(r"(?i)(?: dot |\[dot\]|\(dot\)| \. )", text) is not None


# --- MAC addresses ------------------------------------------------------------------------------

MAC = re.compile(
    r"(?<![\w:\-.])(?:[0-9A-Fa-f]{2}([:\-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:\-]|\.\w)"
)


def mac_ok(text: str) -> bool:
    """Not an all-zero or all-same placeholder like 00:00:00:00:00:00 or ff:ff:ff:ff:ff:ff."""
    return len(set(re.sub(r"[:\-.]", "", text).lower())) > 2


# --- national ids -------------------------------------------------------------------------------

NINO = re.compile(r"(?<![\w])[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w])")
INSEE = re.compile(
    r"(?<![\w])[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?"
    r"\d{3} ?\d{2}(?![\w])"
)
DNI = re.compile(r"(?<![\w])[XYZ]?\d{7,8}-?[A-Z](?![\w])")
CODICE_FISCALE = re.compile(
    r"(?i)(?<![\w])[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]"
    r"(?![\w])"
)
CPF = re.compile(r"(?<![\w.\-])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\w\-]|\.\d)")
AADHAAR = re.compile(r"(?<![\w\-])[2-9]\d{3} \d{4} \d{4}(?![\w\-]| \d)")
PERSONNUMMER = re.compile(r"(?<![\w\-])(?:19|20)?\d{6}[-+]\d{4}(?![\w\-])")
HETU = re.compile(r"(?<![\w\-])\d{6}[-+A]\d{3}[0-9A-FHJ-NPR-Y](?![\w\-])")
# Named ids: the label, then a number of 6-20 characters with at least 5 digits.
ID_CONTEXT = re.compile(
    r"(?i)\b(?:national (?:id|insurance)(?: number| no\.?)?|id (?:number|no\.?)|identity "
    r"(?:card )?number|personal (?:id|number)|tax (?:id|number)|nino?|bsn|burgerservicenummer|"
    r"sofinummer|steuer-?id|steueridentifikationsnummer|idnr|cpf|dni|nie|aadhaar|pesel|"
    r"personnummer|henkilötunnus|cpr(?:-nr\.?)?|sin|social insurance(?: number| no\.?)?|"
    r"codice fiscale|cf|n[uú]mero de identidad|numéro de sécurité sociale)\b"
    r"[\s:#.]{0,4}(?:(?:is|es|é|est|ist|ist die)\s+)?"
    r"(?P<num>[A-Z0-9](?:[A-Z0-9]|[ .\-/](?=[A-Z0-9])){5,20})"
)

_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_HETU_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
_VERHOEFF_D = [
    "0123456789",
    "1234067895",
    "2340178956",
    "3401289567",
    "4012395678",
    "5987604321",
    "6598710432",
    "7659821043",
    "8765932104",
    "9876543210",
]
_VERHOEFF_P = [
    "0123456789",
    "1576283094",
    "5803796142",
    "8916043527",
    "9453126870",
    "4286573901",
    "2793806415",
    "7046913258",
]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum (cards, Swedish personnummer, Canadian SIN)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def dni_ok(text: str) -> bool:
    """Spanish DNI/NIE: the letter is the number mod 23 (NIE: X/Y/Z read as 0/1/2)."""
    compact = text.replace("-", "").upper()
    body = compact[:-1].replace("X", "0").replace("Y", "1").replace("Z", "2")
    return body.isdigit() and len(body) in (8, 9) and _DNI_LETTERS[int(body) % 23] == compact[-1]


def insee_ok(text: str) -> bool:
    """French social security number: the 2-digit key is 97 - (13 digits mod 97)."""
    compact = text.replace(" ", "").upper()
    body = compact[:13].replace("2A", "19").replace("2B", "18")
    return body.isdigit() and 97 - int(body) % 97 == int(compact[13:])


def verhoeff_ok(digits: str) -> bool:
    """The Verhoeff checksum of Indian Aadhaar numbers."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = int(_VERHOEFF_D[c][int(_VERHOEFF_P[i % 8][int(ch)])])
    return c == 0


def personnummer_ok(text: str) -> bool:
    """Swedish personal number: a real month and day, and Luhn over the last ten digits."""
    digits = _digits(text)[-10:]
    month, day = int(digits[2:4]), int(digits[4:6])
    return 1 <= month <= 12 and 1 <= day % 60 <= 31 and luhn_ok(digits)


def hetu_ok(text: str) -> bool:
    """Finnish personal identity code: the check character is the 9 digits mod 31."""
    digits = text[:6] + text[7:10]
    return digits.isdigit() and _HETU_CHARS[int(digits) % 31] == text[-1].upper()


def cpf_ok(text: str) -> bool:
    """Brazilian CPF: two check digits (mod 11), and not one digit repeated."""
    d = [int(c) for c in _digits(text)]
    if len(d) != 11 or len(set(d)) == 1:
        return False
    for n in (9, 10):
        s = sum(d[i] * (n + 1 - i) for i in range(n)) * 10 % 11
        if s % 10 != d[n]:
            return False
    return True


def aadhaar_ok(text: str) -> bool:
    return verhoeff_ok(_digits(text))


def named_id_ok(text: str) -> bool:
    """A labelled id: at least five digits (so 'id number is required' stays prose)."""
    return len(_digits(text)) >= 5


# --- passports, licences, dates of birth -------------------------------------------------------

PASSPORT = re.compile(
    r"(?i)\b(?:passport|reisepass|passeport|pasaporte|passaporto|paspoort)"
    r"(?:[\s\-]*(?:number|no\.?|nr\.?|num(?:ber|éro|ero)|#))?[\s:#.]{0,4}"
    r"(?:(?:is|es|est|ist)\s+)?(?P<num>(?=[A-Z0-9]*\d)[A-Z0-9]{6,10})(?![\w\-])"
)
LICENCE = re.compile(
    r"(?i)\b(?:driver'?s? licen[cs]e|driving licen[cs]e|licen[cs]e|dl|führerschein|"
    r"permis de conduire|carnet de conducir|patente di guida|rijbewijs)"
    r"(?:[\s\-]*(?:number|no\.?|nr\.?|num(?:ber|éro|ero)|#))?[\s:#.]{0,4}"
    r"(?:(?:is|es|est|ist)\s+)?(?P<num>(?=[A-Z0-9\-]*\d)[A-Z0-9](?:[A-Z0-9\-]{4,18})[A-Z0-9])"
    r"(?![\w\-])"
)
_MONTHS = (
    r"jan(?:uary|vier|uar|naio)?|feb(?:ruary|ruar|rero)?|f[ée]v(?:rier)?|mar(?:ch|s|zo|"
    r"ço)?|märz|apr(?:il)?|avr(?:il)?|abr(?:il)?|aprile|may|mai|mayo|maggio|jun[ei]?|"
    r"juin|junio|giugno|jul[iy]?|juil(?:let)?|julio|luglio|aug(?:ust)?|ao[uû]t|agosto|"
    r"sep(?:t(?:ember|iembre|embre)?)?|settembre|o[ck]t(?:ober|obre|ubre)?|ottobre|"
    r"nov(?:ember|embre|iembre)?|de[cz](?:ember|embre)?|d[ée]cembre|diciembre|dicembre"
)
_DATE = (
    rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[./\-]\d{{1,2}}[./\-]\d{{2,4}}"
    rf"|\d{{1,2}}\.? (?:de )?(?:{_MONTHS})\.?,? (?:de )?\d{{4}}"
    rf"|(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}})"
)
DATE_OF_BIRTH = re.compile(
    rf"(?i)\b(?:born(?: on)?|date of birth|d\.?o\.?b\.?|birth ?date|birthday(?: is)?|"
    rf"geboren(?: am| op)?|geburtsdatum|geboortedatum|n[ée]e? le|date de naissance|"
    rf"fecha de nacimiento|nacid[oa] el|data di nascita|nat[oa] il)(?!\w)[\s:,]{{0,4}}"
    rf"(?:(?:on|is|am|le|el|il)\s+)?(?P<date>{_DATE})(?![\w])"
)

# --- postcodes -------------------------------------------------------------------------------

UK_POSTCODE = re.compile(r"(?i)(?<![\w\-])[A-Z]{1,2}\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2}(?![\w\-])")
US_STATE_ZIP = re.compile(
    r"(?<![\w])(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|"
    r"O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY]) \d{5}(?:-\d{4})?(?![\w\-])"
)
ZIP_PLUS4 = re.compile(r"(?<![\w\-.])\d{5}-\d{4}(?![\w\-])")
CITY_POSTCODE = re.compile(  # DE/FR/ES/IT "10115 Berlin", NL "1012 AB Amsterdam"
    r"(?<![\w$€£.,\-])(?:\d{5}|[1-9]\d{3} ?(?!AD|BC|CE|AM|PM|MB|GB|KB|TB)[A-Z]{2})"
    r" (?=[A-ZÄÖÜÉ][a-zäöüßéèàç]{2,})(?!(?:Units?|Users?|Steps?|Tokens?|Rows?|Items?|Pages?)\b)"
    r"[A-ZÄÖÜÉ][a-zäöüßéèàç\-]{2,}"
)
CA_POSTCODE = re.compile(r"(?<![\w\-])[ABCEGHJ-NPRSTVXY]\d[A-Z] ?\d[A-Z]\d(?![\w\-])")
STREET_EN_LOWER = re.compile(
    r"(?i)(?<![\w.])\d{1,5}[a-z]? (?!(?:the|a|an|in|on|of|and|or|to|for|at|by|with|from|"
    r"best|easy|only|same|other|right|wrong|more|new|simple|quick)\b)"
    r"(?:[a-z]+ ){1,3}(?:street|st|avenue|ave|road|rd|lane|ln|"
    r"drive|boulevard|blvd|way)\b\.?"
)
STREET_IT_ES = re.compile(
    r"\b(?:Via|Viale|Piazza|Corso|Calle|Avenida|Avda\.|Plaza|Paseo|Carrer|Rua|Avenue)"
    r" (?:(?:de|del|della|di|la|da|do|dos) )?[A-ZÁÉÍÓÚ][\wáéíóúñç']+"
    r"(?: (?:(?:de|del|della|di|la|da|do|dos) )?[A-ZÁÉÍÓÚ][\wáéíóúñç']+){0,3},? \d{1,4}\b"
)

# --- phones, validated by libphonenumber --------------------------------------------------------

# Regions whose national formats are tried for numbers written without a country code (an
# international +.. number is read in any of them).
PHONE_REGIONS = (
    "US",
    "GB",
    "DE",
    "FR",
    "NL",
    "ES",
    "IT",
    "IN",
    "BR",
    "JP",
    "AU",
    "CA",
    "CH",
    "AT",
    "BE",
    "SE",
    "IE",
    "PL",
    "PT",
    "MX",
)


_PHONE_CANDIDATE = re.compile(r"\+?\(?\d[\d \-.()/]{5,24}\d")
_DATE_OR_DOTTED = re.compile(r"\d{1,4}[./]\d{1,2}[./]\d{2,4}|^\d{1,3}(?:\.\d{1,3}){3}$")


def _not_a_phone(text: str, start: int, end: int) -> bool:
    """What libphonenumber accepts but a reader would not call a phone number: a date
    ("01.02.2024 10" before ":30"), a dotted quad (a netmask), or a number glued to a time."""
    found = text[start:end]
    return bool(_DATE_OR_DOTTED.search(found) or re.match(r"[:.]\d", text[end : end + 2]))


def phone_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the numbers libphonenumber finds VALID (real number ranges of a region) in
    `text`, non-overlapping, left to right."""
    spans: set[tuple[int, int]] = set()
    # libphonenumber's matcher costs ~0.1 ms per region per call, so it only reads short
    # windows around digit runs that could be phones (7 to 17 digits), not the whole text.
    for candidate in _PHONE_CANDIDATE.finditer(text):
        if not 7 <= sum(ch.isdigit() for ch in candidate.group()) <= 17:
            continue
        lo = max(0, candidate.start() - 4)
        window = text[lo : candidate.end() + 4]
        for region in PHONE_REGIONS:
            for match in phonenumbers.PhoneNumberMatcher(
                window, region, leniency=phonenumbers.Leniency.VALID
            ):
                start, end = lo + match.start, lo + match.end
                if not _not_a_phone(text, start, end):
                    spans.add((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
