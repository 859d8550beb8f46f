"""Personal-data scrubbing: replace e-mails (also disguised ones), phones, cards, IBANs, IPs, SSNs
and other national ids, passport and licence numbers, dates of birth, MAC addresses, secrets,
street addresses and postcodes in text with typed placeholders such as `[EMAIL]` before anything
is written to a dataset, and detect leftovers (`contains_pii`) for validation's leak check.

Why our own rules and not Presidio: measured on the labelled probe set (tests/training/
pii_probes.py, 157 strings in 13 locales) and on the bundled guide plus 200 model-like answers
(bench/pii.py), Presidio's pattern recognizers (they do run offline without a spaCy model, but
its URL recognizer tries to download the public-suffix list) found 59% of the probes and changed
39 of 356 guide lines and 70 of 200 answers (URLs, dates, versions), at ~100x our time. Phone
numbers are the exception where a well-kept library is clearly better than patterns: they are
validated with libphonenumber (`phonenumbers`, as Presidio does), which found 24 of 25 probe
phones with no false positive on the guide or the answers.

Precision matters as much as recall: a scrubber that eats years, prices, versions and order ids
ruins the training data it protects. So numbers are only replaced when they validate as what they
claim to be (cards by Luhn and issuer prefix, IBANs by length and mod-97, IPs by `ipaddress`) or
when their shape is unmistakable (separated phone groups, dashed SSNs).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal, get_args

from training.dataset import pii_ids as ids

PiiKind = Literal[
    "email",
    "phone",
    "card",
    "iban",
    "ip",
    "ssn",
    "national_id",
    "passport",
    "licence",
    "dob",
    "mac",
    "secret",
    "address",
]
KINDS: tuple[PiiKind, ...] = get_args(PiiKind)


def placeholder(kind: PiiKind) -> str:
    """The text that replaces one item of `kind`, e.g. `[EMAIL]`."""
    return f"[{kind.upper()}]"


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and how many items of each kind were replaced (kinds with none omitted)."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def found(self) -> int:
        """Items replaced in total."""
        return sum(self.counts.values())


# A rule's replacer gets the match and returns the replacement, or None to leave the text alone
# (the candidate did not validate).
Replacer = Callable[[re.Match[str]], str | None]


@dataclass(frozen=True)
class _Rule:
    kind: PiiKind
    pattern: re.Pattern[str]
    replace: Replacer
    needs_digit: bool = False  # skipped on digit-free text (most prose): a cheap speed-up


def _whole(kind: PiiKind, check: Callable[[str], bool] | None = None) -> Replacer:
    """Replace the whole match when `check` (if any) accepts it."""

    def replace(m: re.Match[str]) -> str | None:
        return placeholder(kind) if check is None or check(m.group()) else None

    return replace


def _group(kind: PiiKind, name: str, check: Callable[[str], bool] | None = None) -> Replacer:
    """Replace only the named group, keeping its context (e.g. the 'password:' label)."""

    def replace(m: re.Match[str]) -> str | None:
        value = m.group(name)
        if check is not None and not check(value):
            return None
        start, end = m.span(name)
        whole = m.group()
        return whole[: start - m.start()] + placeholder(kind) + whole[end - m.start() :]

    return replace


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# --- secrets -----------------------------------------------------------------------------------

# With or without its END line (a key pasted half): then the base64 lines that follow it.
_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE "
    r"KEY-----|(?:\s*[A-Za-z0-9+/=]{8,})+)",
    re.DOTALL,
)
_URL_CREDENTIALS = re.compile(
    r"(?i)\b[a-z][a-z0-9+.\-]{1,15}://(?P<userinfo>[^\s/?#@:]+:[^\s/?#@]+)@"
)
_KNOWN_TOKENS = re.compile(
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}"  # OpenAI / Anthropic style
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}"  # Stripe
    r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
)  # JWT
_BEARER = re.compile(r"(?i)\bbearer\s+(?P<token>[A-Za-z0-9\-._~+/]{16,}=*)")
_SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|pw|passcode|secret|api[_\-]?key|apikey|"
    r"access[_\-]?key|token|credentials?|private[_\-]?key|client[_\-]?secret|pin|"
    r"passwort|kennwort|mot de passe|contraseña|clave|wachtwoord|senha|"
    r"parola d'ordine"
)
_KEY_VALUE = re.compile(
    rf"(?i)\b(?:[a-z0-9]{{1,20}}[_\-.]){{0,4}}(?:{_SECRET_WORDS})"
    r"(?:[_\-.](?:key|id|secret|token|value|string|str|hash|b64)){0,3}"
    r"(?P<sep>\s*[:=]\s*|\s+(?:is|was|ist|war|est|es|è|é)\s+)(?P<q>[\"'`]?)(?P<value>[^\s\"'`,;]{4,})(?P=q)"
)
# "I use the password Summer2024! everywhere": no separator, so the value must look made up
# (a digit or a symbol in it), unlike "the password field".
_BARE_PASSWORD = re.compile(
    r"(?i)\b(?:password|passwort|passcode|pin|passphrase)\s+"
    r"(?P<value>(?=[^\s]*[\d!@#$%^&*?])[^\s\"'`,;]{4,}?)"
    r"(?=[.,;:!?]?(?:\s|$))"
)
_HIGH_ENTROPY = re.compile(r"(?<![\w+/=\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![\w+/=\-])")


def _key_value_secret(m: re.Match[str]) -> str | None:
    value = m.group("value").rstrip(".")
    # Placeholders, masks and code are documentation, not secrets: `password = getpass()`.
    if (
        value[0] in "[<{$*"
        or "(" in value
        or set(value) <= set("*x.")
        or value.lower() in {"none", "null", "true", "false", "required", "optional"}
    ):
        return None
    # "my password is hunter2" is a secret; "the password is required" is prose.
    if (
        m.group("sep").strip() in {"is", "was", "ist", "war", "est", "es", "è", "é"}
        and value.isalpha()
    ):
        return None
    return _group("secret", "value")(m)


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(token: str) -> bool:
    """A long hex string (keys, hashes) or a mixed-case alphanumeric string random enough to be
    a generated key rather than an identifier or a path."""
    body = token.rstrip("=")
    if re.fullmatch(r"[0-9a-fA-F]{32,}", body):
        return bool(re.search(r"\d", body) and re.search(r"[a-fA-F]", body))
    return (
        bool(re.search(r"[a-z]", body) and re.search(r"[A-Z]", body) and re.search(r"\d", body))
        and _entropy(body) >= 4.3
    )


# --- e-mail, bank and card numbers, SSN --------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    r"(?![\w\-])"
)

# Official IBAN lengths; an unknown country is not an IBAN (keeps false positives at ~0).
_IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VG": 24,
    "XK": 20,
}
_IBAN = re.compile(r"(?i)(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}")


def iban_valid(text: str) -> bool:
    """True when `text` (spaces allowed) has its country's IBAN length and passes mod-97."""
    compact = text.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(m: re.Match[str]) -> str | None:
    # The pattern is greedy and may run into the next word ("... 00 AND"); try each end that
    # falls on a word boundary, longest first.
    text = m.group()
    for end in range(len(text), 14, -1):
        if text[end - 1] == " " or (end < len(text) and text[end] != " "):
            continue
        if iban_valid(text[:end]):
            return placeholder("iban") + text[end:]
    return None


_CARD = re.compile(r"(?<![\w\-.])\d(?:[ \-]?\d){12,18}(?![\w\-]|[.,]\d)")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_issuer_ok(digits: str) -> bool:
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    return (
        (digits[0] == "4" and n in (13, 16, 19))  # Visa
        or ((51 <= two <= 55 or 2221 <= four <= 2720) and n == 16)  # Mastercard
        or (two in (34, 37) and n == 15)  # Amex
        or (two in (30, 36, 38, 39) and 14 <= n <= 19)  # Diners
        or (digits.startswith(("6011", "64", "65")) and 16 <= n <= 19)  # Discover
        or (two == 35 and 16 <= n <= 19)  # JCB
        or (two == 62 and 16 <= n <= 19)  # UnionPay
        or ((two == 50 or 56 <= two <= 69) and 12 <= n <= 19)
    )  # Maestro


def card_valid(text: str) -> bool:
    """True for a 13-19 digit number with a card issuer's prefix that passes Luhn, so most
    order ids and other long numbers are left alone."""
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and _card_issuer_ok(digits) and luhn_valid(digits)


_SSN = re.compile(r"(?<![\w\-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w\-])")
_SSN_CONTEXT = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b[^\d\n]{0,12}"
    r"(?P<num>\d{3}[ \-]?\d{2}[ \-]?\d{4})(?![\w\-])"
)

# --- network addresses -------------------------------------------------------------------------

_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.]+)?(?![\w:]|\.\d)"
)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")


def _ip_identifying(text: str) -> bool:
    """A valid address that can point at a machine or person. Loopback, unspecified,
    multicast and reserved ones (0.0.0.0, 127.0.0.1, ::1, 255.255.255.0) are generic setup
    advice, not personal data."""
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_reserved)


# --- phones ------------------------------------------------------------------------------------

# International: "+44 20 7946 0958", "+1 (555) 123-4567", "+44 (0)20 7946 0958".
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(\d{1,4}\)|[ .\-]?\d{1,5}){1,6}(?!\w)")
# North American: "(555) 123-4567", "555-123-4567", "1-800-555-0199"; groups need separators so
# bare 10-digit ids survive.
_PHONE_NANP = re.compile(
    r"(?<![\w.+\-/])(?:1[ .\-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .\-])"
    r"\d{3}[ .\-]\d{4}(?![\w\-]|[.,/]\d)"
)
# National with trunk 0: "020 7946 0958", "06 12 34 56 78", "030/1234567", "(030) 1234567".
# One separator throughout, so dates like "01.02.2024 10" do not chain into a number.
_PHONE_NATIONAL = re.compile(
    r"(?<![\w.+\-/])(?:\(0\d{1,4}\) ?\d{2,8}(?:[ \-]\d{2,8}){0,3}"
    r"|0\d{1,4}(?P<sep>[ .\-/])\d{2,8}(?:(?P=sep)\d{2,8}){0,3})(?![\w\-]|[.,/]\d)"
)
# Bare digits are only a phone when the text says so: "call me at 5551234567".
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|call me|text me|reach me|whatsapp|"
    r"fax)\b[^\d\n\[]{0,20}?(?P<num>\+?\d[\d \-.()]{5,18}\d)(?![\w])"
)


def _digit_count(lo: int, hi: int) -> Callable[[str], bool]:
    return lambda text: lo <= len(_digits(text)) <= hi


def _labelled_id(m: re.Match[str]) -> str | None:
    """A named national id ('BSN 111222333'): replace the number, keep the label."""
    return _group("national_id", "num", ids.named_id_ok)(m)


# --- street addresses --------------------------------------------------------------------------

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|"
    r"Way|Place|Pl|Terrace|Parkway|Pkwy|Circle|Highway|Hwy|Square|Close|Crescent)"
)
_NOT_A_NAME = r"(?!(?:The|A|An|In|On|Of|And|Or|To|For|At|By|With|From)\b)"
_ADDRESS_EN = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?(?: [NSEW]\.?)? (?:{_NOT_A_NAME}[A-Z][a-z]+\.? |\d+(?:st|nd|rd|th) )"
    rf"{{1,4}}{_STREET_SUFFIX}\b\.?(?:,? (?:Apt|Apartment|Suite|Ste|Unit|#)\.? ?[\w\-]+)?"
)
_ADDRESS_DE = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|"
    r"damm|ufer)\s\d{1,4}[a-z]?\b"
)
_ADDRESS_FR = re.compile(
    r"\b\d{1,4}(?: ?(?:bis|ter))?,? (?:rue|avenue|boulevard|bd|place|chemin|"
    r"allée|impasse|quai|cours) (?:(?:de|du|des|la|le)\s|l'|d')*"
    r"[A-ZÉÈ][\w'\-]+(?: [A-ZÉÈ][\w'\-]+)*"
)

# Order matters: secrets and e-mails first (disguised e-mails before the plain-address rule eats
# their '@' part), labelled ids before the number rules that would take their digits for a
# phone (they contain digits and '@' the later rules would
# split), IBANs before cards before phones (a longer validated number wins over a shorter guess).
_RULES: tuple[_Rule, ...] = (
    _Rule("secret", _PEM, _whole("secret")),
    _Rule("secret", _URL_CREDENTIALS, _group("secret", "userinfo")),
    _Rule("secret", _KNOWN_TOKENS, _whole("secret")),
    _Rule("secret", _BEARER, _group("secret", "token")),
    _Rule("secret", _KEY_VALUE, _key_value_secret),
    _Rule("secret", _BARE_PASSWORD, _group("secret", "value")),
    _Rule("email", ids.OBFUSCATED_EMAIL, _whole("email", ids.obfuscated_email_ok)),
    _Rule("email", _EMAIL, _whole("email")),
    _Rule("secret", _HIGH_ENTROPY, _whole("secret", _looks_random)),
    _Rule("iban", _IBAN, _iban, True),
    _Rule("card", _CARD, _whole("card", card_valid), True),
    _Rule("dob", ids.DATE_OF_BIRTH, _group("dob", "date"), True),
    _Rule("passport", ids.PASSPORT, _group("passport", "num"), True),
    _Rule("licence", ids.LICENCE, _group("licence", "num"), True),
    _Rule("ssn", _SSN, _whole("ssn"), True),
    _Rule("ssn", _SSN_CONTEXT, _group("ssn", "num"), True),
    _Rule("national_id", ids.ID_CONTEXT, _labelled_id, True),
    _Rule("national_id", ids.NINO, _whole("national_id"), True),
    _Rule("national_id", ids.INSEE, _whole("national_id", ids.insee_ok), True),
    _Rule("national_id", ids.DNI, _whole("national_id", ids.dni_ok), True),
    _Rule("national_id", ids.CODICE_FISCALE, _whole("national_id"), True),
    _Rule("national_id", ids.CPF, _whole("national_id", ids.cpf_ok), True),
    _Rule("national_id", ids.AADHAAR, _whole("national_id", ids.aadhaar_ok), True),
    _Rule("national_id", ids.PERSONNUMMER, _whole("national_id", ids.personnummer_ok), True),
    _Rule("national_id", ids.HETU, _whole("national_id", ids.hetu_ok), True),
    _Rule("mac", ids.MAC, _whole("mac", ids.mac_ok), True),
    _Rule("ip", _IPV6, _whole("ip", _ip_identifying)),
    _Rule("ip", _IPV4, _whole("ip", _ip_identifying), True),
    _Rule("address", ids.US_STATE_ZIP, _whole("address"), True),  # before phones: 62704-1234
    _Rule("address", ids.ZIP_PLUS4, _whole("address"), True),
    _Rule("phone", _PHONE_INTL, _whole("phone", _digit_count(8, 16)), True),
    _Rule("phone", _PHONE_NANP, _whole("phone"), True),
    _Rule("phone", _PHONE_NATIONAL, _whole("phone", _digit_count(9, 12)), True),
    _Rule("phone", _PHONE_CONTEXT, _group("phone", "num", _digit_count(7, 15)), True),
    _Rule("address", _ADDRESS_EN, _whole("address"), True),
    _Rule("address", ids.STREET_EN_LOWER, _whole("address"), True),
    _Rule("address", _ADDRESS_DE, _whole("address"), True),
    _Rule("address", _ADDRESS_FR, _whole("address"), True),
    _Rule("address", ids.STREET_IT_ES, _whole("address"), True),
    _Rule("address", ids.UK_POSTCODE, _whole("address"), True),
    _Rule("address", ids.CA_POSTCODE, _whole("address"), True),
    _Rule("address", ids.CITY_POSTCODE, _whole("address"), True),
)
# libphonenumber runs after the IP rule (an address is not a phone) and before the regex phone
# rules, on texts with enough digits for a phone.
_PHONE_LIBRARY_BEFORE = next(i for i, r in enumerate(_RULES) if r.pattern is ids.US_STATE_ZIP) + 2


def _library_phones(text: str, counts: Counter[str]) -> str:
    if sum(ch.isdigit() for ch in text) < 7:
        return text
    out, last = [], 0
    for start, end in ids.phone_spans(text):
        out += [text[last:start], placeholder("phone")]
        counts["phone"] += 1
        last = end
    out.append(text[last:])
    return "".join(out)


def scrub(text: str, kinds: Collection[str] | None = None) -> ScrubResult:
    """Replace personal data in `text` with typed placeholders and count what was replaced.

    `kinds` limits the scrub to some kinds (default: all). Scrubbing is idempotent: a scrubbed
    text scrubs to itself with no counts.
    """
    counts: Counter[str] = Counter()
    has_digit = any(ch.isdigit() for ch in text)  # replacements never add digits
    for i, rule in enumerate(_RULES):
        if i == _PHONE_LIBRARY_BEFORE and has_digit and (kinds is None or "phone" in kinds):
            text = _library_phones(text, counts)
        if (kinds is not None and rule.kind not in kinds) or (rule.needs_digit and not has_digit):
            continue

        def replace(m: re.Match[str], rule: _Rule = rule) -> str:
            out = rule.replace(m)
            if out is None:
                return m.group()
            counts[rule.kind] += 1
            return out

        text = rule.pattern.sub(replace, text)
    return ScrubResult(text, dict(counts))


def contains_pii(text: str, kinds: Collection[str] | None = None) -> bool:
    """True when `text` holds anything `scrub` would replace (validation's leak check on
    generated answers; pass `kinds` to check only some)."""
    return scrub(text, kinds).found > 0
