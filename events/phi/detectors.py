"""The detectors: HIPAA Safe Harbor identifiers in one string that is already normalised.

Callers pass text through ``normalise.fold`` first (``events.phi.scan``/``scan_text`` do); the
patterns here are written for that ASCII-leaning view: ASCII digits, ``-`` for every dash, ``' '``
for every space, keywords written out (``SSN``, not ``S.S.N.``).

Design rules:

* Precision matters as much as recall: ordinary operational messages (``"Processing 450 of
  1000 rows"``, ``"Model v1.2.3 trained"``, ISO timestamps, checksums, ``run_...`` ids) must
  pass. Numbers are only identifiers when their shape is unambiguous (``123-45-6789``,
  ``(617) 555-0101``, a VIN with a valid check digit, a Luhn-valid card) or a context word
  says what they are (``MRN 123456``, ``DOB 1950-03-02``, ``age 92``).
* Fast: patterns are compiled once; a string is split into lowercase words once and only the
  detectors whose trigger words occur are run; plain tokens (``[A-Za-z0-9_]+``) and ISO
  timestamps take a short path.

Pure Python, standard library only.
"""

from __future__ import annotations

import ipaddress
import re

# --------------------------------------------------------------------------------------------
# Categories
# --------------------------------------------------------------------------------------------

PERSON_NAME = "PERSON_NAME"
SSN = "SSN"
MEDICAL_RECORD_NUMBER = "MEDICAL_RECORD_NUMBER"
HEALTH_PLAN_NUMBER = "HEALTH_PLAN_NUMBER"
ACCOUNT_NUMBER = "ACCOUNT_NUMBER"
LICENSE_NUMBER = "LICENSE_NUMBER"
CERTIFICATE_NUMBER = "CERTIFICATE_NUMBER"
PHONE_NUMBER = "PHONE_NUMBER"
FAX_NUMBER = "FAX_NUMBER"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
STREET_ADDRESS = "STREET_ADDRESS"
ZIP_CODE = "ZIP_CODE"
DATE_OF_BIRTH = "DATE_OF_BIRTH"  # and every other date tied to a person: admission, discharge...
AGE_OVER_89 = "AGE_OVER_89"
URL = "URL"
IP_ADDRESS = "IP_ADDRESS"
DEVICE_IDENTIFIER = "DEVICE_IDENTIFIER"
VEHICLE_IDENTIFIER = "VEHICLE_IDENTIFIER"
BIOMETRIC_IDENTIFIER = "BIOMETRIC_IDENTIFIER"
HEALTH_INFORMATION = "HEALTH_INFORMATION"  # a statement about one individual's health
PHI_FIELD_NAME = "PHI_FIELD_NAME"  # a dict key such as "patientName", "mrn", "dob"
# Not an identifier but a way to hide one: bidi controls make the shown order of characters
# differ from the stored order ("SSN " + RLO + "9876-54-321"), so no scan of the stored text
# can vouch for what a reader sees. Event text never needs them.
BIDI_CONTROL = "BIDI_CONTROL"

CATEGORIES: frozenset[str] = frozenset(
    {
        PERSON_NAME,
        SSN,
        MEDICAL_RECORD_NUMBER,
        HEALTH_PLAN_NUMBER,
        ACCOUNT_NUMBER,
        LICENSE_NUMBER,
        CERTIFICATE_NUMBER,
        PHONE_NUMBER,
        FAX_NUMBER,
        EMAIL_ADDRESS,
        STREET_ADDRESS,
        ZIP_CODE,
        DATE_OF_BIRTH,
        AGE_OVER_89,
        URL,
        IP_ADDRESS,
        DEVICE_IDENTIFIER,
        VEHICLE_IDENTIFIER,
        BIOMETRIC_IDENTIFIER,
        HEALTH_INFORMATION,
        PHI_FIELD_NAME,
        BIDI_CONTROL,
    }
)


# --------------------------------------------------------------------------------------------
# Word lists
# --------------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Common given names and surnames. Used only where a context already hints at a person
# ("Patient John ...", "John Doe, 45") or for a first+last pair ("John Smith"). Words that are
# also ordinary vocabulary in pipeline messages (Will, Mark, Max, Grace, Ray, Long, Price,
# Ward, King, Hill, ...) are deliberately left out.
_FIRST_NAMES: frozenset[str] = _words(
    """
    aaron abigail adam adrian ahmed aisha alan albert alejandro alex alexander alexandra alexis
    alice alicia allison amanda amelia amir amy ana andrea andrew angela anita ann anna anne
    annie anthony antonio arthur ashley aurora barbara benjamin betty beverly bobby brandon
    brenda brian brittany bruce bryan camila carl carlos carmen carol caroline carolyn catherine
    charles charlotte cheryl chloe christian christina christine christopher cynthia daniel
    danielle david deborah debra denise dennis diana diane donald donna doris dorothy douglas
    dylan edward elena elijah elizabeth ella ellen emily emma eric ethan eugene evelyn fatima
    frances francisco frank gabriel gary george gerald gloria gregory hannah harold harry heather
    helen henry hiroshi isabella ivan jacob jacqueline james jamie jane janet janice jason jean
    jeffrey jennifer jeremy jerry jesse jessica joan joe john johnny jonathan jordan jorge jose
    joseph joshua joyce juan judith judy julia julie justin karen katherine kathleen kathryn
    kayla keith kelly kenneth kevin kimberly kyle larry laura lauren lawrence leah linda lisa
    logan lucas luis madison manuel margaret maria marie marilyn martha mary matthew megan
    melissa michael michelle miguel mohammed muhammad nancy natalie nathan nicholas nicole noah
    olga olivia pamela patricia patrick paul pedro peter philip priya rachel rahul raj ralph
    randy raymond rebecca richard robert roger ronald roy ruth ryan samantha samuel sandra sara
    sarah scott sean sharon shirley sofia sophia stephanie stephen steven susan teresa theresa
    thomas timothy tyler victoria vincent virginia walter wayne wei william yuki zachary
    """
)
_SURNAMES: frozenset[str] = _words(
    """
    adams ahmed ali allen alvarez anderson bailey baker bennett brown campbell carter castillo
    chen clark collins cooper cruz davis diaz doe edwards evans fischer flores foster garcia
    gomez gonzalez gupta hall harris hernandez howard hughes jackson jenkins jimenez johnson
    jones kaur khan kim kowalski kumar lee lewis lopez martin martinez mendoza miller mitchell
    moore morales morgan morris murphy myers nelson nguyen obrien ortiz parker patel perez
    perry peterson phillips ramirez ramos reyes richardson rivera roberts robinson rodriguez
    roe rogers ross ruiz sanchez sanders schmidt shah singh smith stewart sullivan taylor
    thompson torres tran turner walker wang watson williams wilson wright wu yamamoto zhang
    """
)
# Capitalised words that commonly follow "patient", "subject", "name:" in pipeline text and
# are not names ("Patient Data", "subject Matching", "name: Cohort A").
_COMMON_WORDS: frozenset[str] = _words(
    """
    a all an and any access acuity age ages alpha analysis analyses analytics approval approvals
    arm arms artifact artifacts attributes baseline batch batches beta billing bmi care category
    categories census characteristics claim claims class classes cleaning cleanup cohort cohorts
    column columns consent consents cost costs count counts criteria daily dashboard data day
    days dedup deduplication deidentified delta demographics detail details diagnoses diagnosis
    each education eligibility encounter encounters engagement enrollment enrolment ethics
    ethnicity event events every exclusion experience export exports extraction feature
    features field fields file files filter filtering filters flow follow followup form forms
    fwd gamma gender governance group groups hash hashes health height history holdout id ids
    identifier identifiers identity import imports inclusion index info information ingestion
    join key keys lab label labels labs level linkage linking list lists lookup masked match
    matching mapping medication medications merge mix model models monitoring monthly name
    names no none normalization normalisation not note notes notice null number numbers
    outcome outcomes outreach panel pending phase pipeline population portal privacy
    procedure procedures profile profiles protocol pseudonymized pseudonymised questionnaire
    race record records redacted registry report reports request requests required resolution
    review reviews risk row rows run runs safety sample samples sampling satisfaction
    scheduler score scores screening search selection set sets sex site sites source sources
    split stage status step steps stratification studies study summaries summary survey
    surveys sync table tables task tasks test testing tests the throughput timeline tracker
    tracking train training trial trials type types unknown update updates validation visit
    visits vitals volume volumes weekly weight weighting weights anonymous action actions re
    level selection
    """
) | _words(
    # Nouns of software and pipelines that stage names put after "Patient" or "Subject" in
    # title case ("Patient Graph Builder", "Subject Visit Windowing").
    """
    builder builders graph graphs viewer explorer engine service services loader parser writer
    reader scanner exporter importer generator validator checker mapper matcher linker store
    cache queue worker runner scheduler manager tracker journey timeline flow safety zero
    network embedding embeddings vector vectors search query queries sheet sheets extract
    extracts snapshot snapshots archive module modules app api view views chart charts
    summary summaries metric metrics signal signals trajectory trajectories window windows
    visit visits portal registry registries atlas catalog catalogue inventory library
    """
)
# Nouns that, before "name:", say the name is a thing's ("Stage name: Data Ingestion").
_THING_NOUNS: frozenset[str] = _words(
    """
    run stage artifact file model project dataset column field table job task experiment
    pipeline step user display host node bucket queue branch tag feature cohort report sheet
    schema index container image service metric parameter param variable var attribute key
    package module class function org organisation organization site study protocol group team
    role event type kind database db cluster worker topic channel workflow template
    """
)
# Words before "fingerprint"/"thumbprint" that make it a data or key checksum, not biometrics.
_NON_BIOMETRIC_PREFIX: frozenset[str] = _words(
    """
    dataset data file model schema cache config build artifact content checksum ssh tls key
    certificate cert pgp gpg browser git commit table column row sha md sha1 sha256 md5 code
    package image container docker
    """
)

_US_STATE_CODES: frozenset[str] = _words(
    """
    AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ
    NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP
    """
)
# Two-letter codes that are also common words or abbreviations ("ID 12345", "IN 2026"): only
# a ZIP code when written "City, ST 12345".
_AMBIGUOUS_STATE_CODES: frozenset[str] = frozenset({"ID", "IN", "OR", "ME", "OK", "HI", "DE", "AS"})
_US_STATE_NAMES: frozenset[str] = _words(
    """
    alabama alaska arizona arkansas california colorado connecticut delaware florida georgia
    hawaii idaho illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts
    michigan minnesota mississippi missouri montana nebraska nevada ohio oklahoma oregon
    pennsylvania tennessee texas utah vermont virginia washington wisconsin wyoming
    """
) | frozenset(
    {
        "new hampshire",
        "new jersey",
        "new mexico",
        "new york",
        "north carolina",
        "north dakota",
        "rhode island",
        "south carolina",
        "south dakota",
        "west virginia",
        "district of columbia",
        "puerto rico",
    }
)

# --------------------------------------------------------------------------------------------
# Trigger words: which detectors a string's lowercase words make worth running
# --------------------------------------------------------------------------------------------

_B_NAME = 1 << 0
_B_HEALTH = 1 << 1
_B_SSN = 1 << 2
_B_MRN = 1 << 3
_B_PLAN = 1 << 4
_B_ACCOUNT = 1 << 5
_B_LICENSE = 1 << 6
_B_CERT = 1 << 7
_B_PHONE = 1 << 8
_B_FAX = 1 << 9
_B_ZIP = 1 << 10
_B_ADDRESS = 1 << 11
_B_DATE = 1 << 12
_B_AGE = 1 << 13
_B_DEVICE = 1 << 14
_B_VEHICLE = 1 << 15
_B_BIOMETRIC = 1 << 16
_B_NAME_AGE = 1 << 17  # hints for "John Doe, 45" / "Jane Roe, 93 F"
_B_AT = 1 << 18  # "jane at example dot com"
_B_DOT = 1 << 19
_B_WWW = 1 << 20
_B_URL_CTX = 1 << 21  # "site: example.org"
_B_AGE_WORDS = 1 << 22  # "aged ninety-two"
_B_PHONE_OR_FAX = _B_PHONE | _B_FAX
# Detectors that can fire on a string without any digit.
_B_NO_DIGIT_NEEDED = _B_NAME | _B_HEALTH | _B_AT | _B_DOT | _B_WWW | _B_URL_CTX | _B_AGE_WORDS


def _triggers() -> dict[str, int]:
    table: dict[str, int] = {}

    def add(bit: int, words: str) -> None:
        for word in words.split():
            table[word] = table.get(word, 0) | bit

    add(
        _B_NAME,
        "mr mrs ms mx dr prof mister patient pt subject participant resident decedent "
        "beneficiary enrollee mother father spouse wife husband son daughter brother sister "
        "guardian sibling kin nok name named surname aka alias nm fullname firstname lastname "
        "patientname ptname",
    )
    for word in _FIRST_NAMES | _SURNAMES:
        add(_B_NAME | _B_NAME_AGE, word)
    add(_B_NAME_AGE, "m f male female yo y years yrs yr")
    add(_B_HEALTH, "patient pt subject participant")
    # Labels are also matched glued ("SocSecNo", "MedRecNo", "DateOfBirth"): a glued label is
    # one lowercase word here, so its common glued forms are listed too.
    add(_B_SSN, "ssn ss social soc ssa sec socsec socsecno ssno")
    add(
        _B_MRN,
        "mrn medical med medrec medrecno mrno rec record recno hospital hosp emr ehr chart "
        "patient pt pat patientid ptid patientno mr m nhs health",
    )
    add(
        _B_PLAN,
        "member mbr memberid subscriber subscr health hlth plan beneficiary bene insurance ins "
        "policy pol policyno medicare mcare medicaid mcaid medi mbi hicn group grp payer payor "
        "enrollee hpid",
    )
    add(
        _B_ACCOUNT,
        "account acct acctno accnt acc accno iban routing aba credit debit card cc bank billing",
    )
    add(
        _B_LICENSE,
        "license licence lic lisc licno dl dea npi state passport ppt driver drivers driving",
    )
    add(_B_CERT, "certificate cert certif")
    add(
        _B_PHONE,
        "phone telephone tel cell cellphone mobile mob ph contact call pager beeper whatsapp "
        "sms phoneno",
    )
    add(_B_FAX, "fax fx facsimile telefax")
    add(_B_ZIP, "zip zipcode postal postcode post")
    add(
        _B_ADDRESS,
        "street st avenue ave av road rd boulevard blvd lane ln drive dr court ct place pl "
        "terrace ter way parkway pkwy highway hwy circle cir plaza pike turnpike box pob "
        "office address addr residence lives living resides residing",
    )
    add(
        _B_DATE,
        "dob d birth birthdate birthday bday b born dt dateofbirth death died deceased dod "
        "passed admitted admission admit adm doa discharged discharge disch dc service dos",
    )
    add(_B_AGE, "age aged yo y year years yr yrs old")
    add(_B_AGE_WORDS, "ninety hundred")
    add(
        _B_DEVICE,
        "serial serialno ser sn s device dev imei meid esn udi implant pacemaker pump monitor "
        "aid cgm defibrillator icd stent mac hardware",
    )
    add(_B_VEHICLE, "vin plate vehicle car registration reg")
    add(
        _B_BIOMETRIC,
        "fingerprint finger thumbprint thumb palm palmprint voiceprint voice faceprint face "
        "facial retina retinal iris biometric biometrics gait dna genetic",
    )
    add(_B_AT, "at")
    add(_B_DOT, "dot period")
    add(_B_WWW, "www")
    add(_B_URL_CTX, "url link site website web homepage domain visit")
    return table


_TRIGGERS: dict[str, int] = _triggers()

# --------------------------------------------------------------------------------------------
# Patterns (compiled once)
# --------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z]+")
# A capital after a small letter ("HospitalNumber") or a capital pair before one ("NHSNumber").
# Led by a character class, so that the search skips to capitals.
_CAMEL_RE = re.compile(r"[A-Z](?:(?<=[a-z][A-Z])|(?<=[A-Z][A-Z])(?=[a-z]))")
_CAMEL_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_DIGIT_RUN_RE = re.compile(r"\d+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_]+")
_ISO_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?Z?")
_GLUED_RE = re.compile(
    r"(?i)(mrn|medrecno|medrec|ssn|socsecno|dob|dateofbirth|npi|dea|mbi|imei|vin|acctno|acct"
    r"|ptid|patientid|memberid)_?(?=[A-Za-z0-9]*\d{4})"
)
_GLUED_CATEGORY: dict[str, str] = {
    "mrn": MEDICAL_RECORD_NUMBER,
    "medrec": MEDICAL_RECORD_NUMBER,
    "medrecno": MEDICAL_RECORD_NUMBER,
    "ptid": MEDICAL_RECORD_NUMBER,
    "patientid": MEDICAL_RECORD_NUMBER,
    "memberid": HEALTH_PLAN_NUMBER,
    "ssn": SSN,
    "socsecno": SSN,
    "dob": DATE_OF_BIRTH,
    "dateofbirth": DATE_OF_BIRTH,
    "acctno": ACCOUNT_NUMBER,
    "npi": LICENSE_NUMBER,
    "dea": LICENSE_NUMBER,
    "mbi": HEALTH_PLAN_NUMBER,
    "imei": DEVICE_IDENTIFIER,
    "vin": VEHICLE_IDENTIFIER,
    "acct": ACCOUNT_NUMBER,
}

_GLUED_STARTS = frozenset(word[:3] for word in _GLUED_CATEGORY)
_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_URL_RE = re.compile(
    r"(?i)(?<![\w.-])(?:(?:https?|ftp|sftp|wss?)(?:://[^\s<>\"']{2,}"
    r"|\s*:\s*/\s*/\s*[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+)|www\.[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+)"
)

# Context-free numeric shapes.
_SSN_SHAPE_RE = re.compile(r"(?<![\w.-])(\d{3})([- .])(\d{2})\2(\d{4})(?![\w-]|\.\d)")
_PHONE_US_RE = re.compile(
    r"(?<![\w+.-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)[\s.-]?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-]|\.\d)"
)
_PHONE_INTL_RE = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[\s.-]?\(?\d{1,5}\)?){2,5}(?![\w-]|\.\d)")
_ZIP4_RE = re.compile(r"(?<![\w-])\d{5}-\d{4}(?![\w-]|\.\d)")
_FIVE_DIGITS_RE = re.compile(r"(?<![\w-])\d{5}(?:-\d{4})?(?![\w-]|\.\d)")
_STATE_BEFORE_RE = re.compile(
    r"(?:(?P<comma>,\s*)(?P<code_c>[A-Z]{2})|(?<![\w-])(?P<code>[A-Z]{2})"
    r"|(?P<name>\b[A-Z][a-z]+(?:\s+(?:of\s+)?[A-Z][a-z]+)?)),?\s+$"
)
_CARD_RE = re.compile(
    r"(?<![\w-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5})(?![\w-])"
)
_IPV4_RE = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\w-]|\.\d)")
_IPV6_CANDIDATE_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])"
)
_MAC_RE = re.compile(
    r"(?<![\w:-])[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}(?![\w:-])"
)
_VIN_RE = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])")
_UDI_GS1_RE = re.compile(r"\(01\)\d{14}")

# Context + identifier. An identifier token holds at least one digit (checked after matching).
# Inside it: letters and digits, single "-", "/" or "." between them, and single spaces between
# digits ("MRN 765 4321").
_ID = (
    r"((?:(?-i:[A-Z]{1,4})\s(?=\d))?[A-Za-z0-9]"
    r"(?:[A-Za-z0-9]|[-/.](?=[A-Za-z0-9])|(?<=\d)\s(?=\d)){2,40})"
)
# Between the words of a label: any run of spaces, dots, dashes, underscores or slashes, or
# nothing ("med rec", "med. rec.", "med-rec", "med_rec", "MedRec").
_S = r"[\s._/-]*"
_NUMWORD = r"(?:number|numb|num|nmbr|nbr|nr|no\.?|#|id|ident|identifier)"
# Optional connectors between a context word and the identifier: "MRN: A-99812",
# "medical record #4411", "member ID is XYZ123", "policy no. 12-345", "med-rec-no 123",
# "MRN -> 123".
_CONN = (
    r"(?:" + _S + _NUMWORD + r"(?![a-z])){0,2}\s*(?:[:#=>|~.-]+\s*){0,3}"
    r"(?:(?:is|was|of|are)\s*[:=]?\s+)?#?\s*"
)
_UNIT_SUFFIX_RE = re.compile(
    r"\d(?:bits?|bytes?|[kmgt]i?b|ms|s|secs?|mins?|h|hrs?|px|k|x|d|-bits?|-bytes?)$", re.I
)


def _ctx(keywords: str) -> re.Pattern[str]:
    return re.compile(r"(?i)(?<![\w.])(?:" + keywords + r")(?!(?-i:[a-z]))" + _CONN + _ID)


# A number word after a label, required where the label alone is an ordinary word.
_NUM_REQUIRED = _S + r"(?:number|numb|num|nmbr|nbr|nr|no\.?|#|id)"

_MRN_RE = _ctx(
    r"mrn|m\.r\.n\.?|mr\s*#|mr" + _S + r"(?:number|num|nbr|no\.?)|m/r"
    r"|med(?:ical|\.)?" + _S + r"rec(?:ords?|\.|s)?(?:" + _S + _NUMWORD + r")?"
    r"|hosp(?:ital|\.)?"
    + _NUM_REQUIRED
    + r"|(?:emr|ehr)"
    + _NUM_REQUIRED
    + r"|chart"
    + _NUM_REQUIRED
    + r"|rec(?:ord|\.)?"
    + _S
    + r"(?:number|num|nbr|no\.?|#)"
    r"|(?:patient|pat\.|pt\.?)"
    + _NUM_REQUIRED
    + r"|nhs"
    + _NUM_REQUIRED
    + r"|health"
    + _S
    + r"record"
    + _NUM_REQUIRED
)
_PLAN_RE = _ctx(
    r"(?:member|mbr|subscriber|subscr|beneficiary|bene|enrollee|payer|payor)"
    + _NUM_REQUIRED
    + r"|(?:health|hlth)"
    + _S
    + r"plan(?:"
    + _S
    + r"(?:beneficiary|member|subscriber))?"
    r"(?:" + _S + _NUMWORD + r")?|hpid"
    r"|ins(?:urance|\.)?"
    + _S
    + r"(?:pol(?:icy|\.)?(?:"
    + _S
    + _NUMWORD
    + r")?|member"
    + _NUM_REQUIRED
    + r"|"
    + _NUMWORD
    + r")"
    r"|pol(?:icy|\.)?" + _S + r"(?:number|num|nbr|no\.?|#|id)"
    r"|medicare(?:" + _S + r"(?:" + _NUMWORD + r"|beneficiary" + _S + r"identifier))?"
    r"|medicaid(?:"
    + _S
    + _NUMWORD
    + r")?|(?:mcare|mcaid|medi-cal)"
    + _NUM_REQUIRED
    + r"|mbi|hicn|gr(?:ou)?p"
    + _S
    + r"(?:number|num|nbr|no\.?|#)"
    r"|plan" + _S + r"(?:member" + _S + r")?(?:id|number|num|no\.?|#)"
)
_ACCOUNT_RE = _ctx(
    r"(?:(?:bank|billing|checking|chk|savings|patient|pt|hospital|financial)" + _S + r")?"
    r"(?:account|acct|acc't|accnt)(?:" + _S + _NUMWORD + r")?"
    r"|acc" + _S + r"(?:number|num|nbr|no\.?|#)|a/c(?:" + _S + _NUMWORD + r")?|iban"
    r"|(?:routing|aba)" + _S + r"(?:number|num|nbr|no\.?|#)"
    r"|(?:credit|debit|cc)" + _S + r"card(?:" + _S + _NUMWORD + r")?"
    r"|(?:card|cc)" + _S + r"(?:number|num|nbr|no\.?|#)"
)
_LICENSE_RE = _ctx(
    r"(?:(?:driver'?s?|driving|drv|medical|med|nursing|state|professional|prof|pharmacy"
    r"|physician|dental|business)" + _S + r")?(?:licen[cs]e|lisc|lic\.)(?!" + _S + r"plate)"
    r"(?:" + _S + _NUMWORD + r")?"
    r"|(?:driver'?s?|driving)" + _S + r"lic(?:" + _S + _NUMWORD + r")?"
    r"|lic" + _S + r"(?:number|num|nbr|no\.?|#)|dl" + _S + r"(?:number|num|nbr|no\.?|#)"
    r"|dl(?=\s*[:=])|dea(?:" + _S + r"(?:" + _NUMWORD + r"|registration))?"
    r"|npi(?:" + _S + _NUMWORD + r")?|state" + _S + r"id(?:" + _S + _NUMWORD + r")?"
    r"|passport(?:" + _S + _NUMWORD + r")?|ppt" + _S + r"(?:number|num|nbr|no\.?|#)"
)
_CERT_RE = _ctx(
    r"(?:(?:birth|death|marriage|medical|vaccination|vacc|immunization|immunisation)" + _S + r")?"
    r"(?:certificate|certif\.?|cert\.?)(?:" + _S + _NUMWORD + r")?"
)
_DEVICE_RE = _ctx(
    r"serial(?:" + _S + _NUMWORD + r")?|ser\.?" + _S + r"(?:number|num|nbr|no\.?|#)|s/n"
    r"|s\.\s?n\.|sn(?=\s*[:#])|(?:device|dev\.?)" + _S + r"(?:id|identifier|serial|sn|s/n|uid"
    r"|number|num|no\.?|#)(?:" + _S + _NUMWORD + r")?|imei|meid|esn(?=\s*[:#])"
    r"|udi(?:" + _S + r"(?:di|pi))?|(?:implant|pacemaker|pump|monitor|hearing" + _S + r"aid|cgm"
    r"|defibrillator|icd|stent)"
    + _S
    + r"(?:id|serial|sn|s/n|uid|ser\.?)(?:"
    + _S
    + _NUMWORD
    + r")?|hardware"
    + _S
    + r"id"
)
_BIOMETRIC_RE = re.compile(
    r"(?i)(?<![\w.])(?:finger" + _S + r"print|thumb" + _S + r"print|palm" + _S + r"print"
    r"|voice" + _S + r"print|face" + _S + r"print"
    r"|retina(?:l)?" + _S + r"(?:scan|id|template|code|image)|iris" + _S + r"(?:scan|code"
    r"|template|id)|biometrics?|facial"
    + _S
    + r"(?:template|geometry|scan)|gait"
    + _S
    + r"signature|dna"
    + _S
    + r"(?:profile|sample)|genetic"
    + _S
    + r"profile)(?!(?-i:[a-z]))"
    r"(?:" + _S + r"(?:id|identifier|template|hash|scan|code|no\.?|number|ref|record|sample|#)"
    r"(?![a-z])){0,2}" + _CONN + _ID
)
_VIN_CTX_RE = re.compile(
    r"(?i)(?<![\w.])vin(?:" + _S + r"(?:number|num|no\.?|#))?\s*(?:[:#=>.-]+\s*){0,3}"
    r"([A-HJ-NPR-Z0-9]{17})(?![A-Za-z0-9])"
)
_PLATE_RE = re.compile(
    r"(?i)(?<![\w.])(?:(?:licen[cs]e|lic\.?|number|registration|reg\.?|vehicle|car|tag)"
    + _S
    + r"plate(?:"
    + _S
    + _NUMWORD
    + r")?|plate"
    + _S
    + r"(?:number|num|no\.?|#)"
    r"|(?:vehicle|car)" + _S + r"(?:id|registration|reg\.?)(?:" + _S + _NUMWORD + r")?)"
    r"(?!(?-i:[a-z]))\s*(?:[:#=>.-]+\s*){0,3}(?:(?:is|was)\s+)?"
    r"([A-Z0-9]{1,4}[- ][A-Z0-9]{1,5}|[A-Z0-9]{2,8})(?![A-Za-z0-9])"
)
_SSN_CTX_RE = re.compile(
    r"(?i)(?<![\w.])(?:ssn|ss\s*#|ss" + _S + r"(?:no\.?|num|number|nbr)"
    r"|social" + _S + r"sec(?:urity|\.)?(?:" + _S + _NUMWORD + r")?"
    r"|soc\.?"
    + _S
    + r"sec\.?(?:"
    + _S
    + _NUMWORD
    + r")?|ssa"
    + _NUM_REQUIRED
    + r")(?!(?-i:[a-z]))"
    + _CONN
    + r"(\d{3})[-\s./]?(\d{2})[-\s./]?(\d{4})(?![\w-])"
)
_PHONE_VALUE = r"(\+?\(?\d[\d\s()./-]{5,18}\d)(?![\w-])"
# "call back on ...", "fax to ...": only before a phone-shaped value (7 to 15 digits).
_PHONE_TO = r"(?:(?:on|at|to|via)\s+)?"
_PHONE_CTX_RE = re.compile(
    r"(?i)(?<![\w.])(?:phone|telephone|tel|cell|cellphone|mobile|mob|ph|pager|beeper|whatsapp"
    r"|sms|contact"
    + _S
    + r"(?:number|num|no\.?|#)|call(?:\s+(?:back|me))?)(?!(?-i:[a-z]))"
    + _CONN
    + _PHONE_TO
    + _PHONE_VALUE
)
_FAX_CTX_RE = re.compile(
    r"(?i)(?<![\w.])(?:fax|fx|facsimile|telefax)(?!(?-i:[a-z]))(?:\s+(?:machine|line))?"
    + _CONN
    + _PHONE_TO
    + _PHONE_VALUE
)
_ZIP_CTX_RE = re.compile(
    r"(?i)(?<![\w.])(?:zip(?:" + _S + r"code)?|postal(?:" + _S + r"code)?|post" + _S + r"code)"
    r"(?!(?-i:[a-z]))" + _CONN + r"(\d{5}(?:-\d{4})?|\d{3}(?=\*\*|xx))(?![\d-])"
)
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl"
    r"|Terrace|Ter|Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Plaza|Pike|Turnpike)"
)
_STREET_RE = re.compile(
    r"(?<![\w.,/-])\d{1,6}[A-Za-z]?\s+(?:(?:[NSEW]|North|South|East|West)\.?\s+)?"
    r"(?:(?:[A-Z][A-Za-z'.-]{0,24}|\d{1,3}(?:st|nd|rd|th))\s+){1,4}" + _STREET_SUFFIX + r"\b"
)
# The same in any case ("12 elm street", "12 ELM ST."): only with a suffix that is not also
# an ordinary word or unit, written in full or with its period.
_STREET_ANY_CASE_RE = re.compile(
    r"(?i)(?<![\w.,/-])\d{1,6}[a-z]?\s+(?:(?:[nsew]|north|south|east|west)\.?\s+)?"
    r"(?:(?:[a-z][a-z'-]{0,24}|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    r"(?:street|avenue|road|boulevard|lane|drive|terrace|parkway|highway"
    r"|(?:st|ave|rd|blvd|ln|dr|pkwy|hwy)\.)(?![a-z])"
)
# A label that says an address follows, then a house number and a word: any street, in any
# language or case ("Address: 42 WALLABY WAY", "resides at 15 rue de la Paix").
_ADDRESS_LABEL_RE = re.compile(
    r"(?i)(?<![\w.])(?:(?:home|street|mailing|postal|residential)" + _S + r")?(?:address|addr\.?"
    r"|residence)\s*[:=]\s*\d{1,6}[a-z]?,?\s+[a-z]{2,}"
    r"|(?<![\w.])(?:lives|living|resides|residing)\s+at\s+\d{1,6}[a-z]?,?\s+[a-z]{2,}\s+[a-z]{2,}"
)
_PO_BOX_RE = re.compile(
    r"(?i)(?<![\w.])(?:p\.?\s?o\.?\s*box|post" + _S + r"office" + _S + r"box)\s*#?\s*\d{1,6}\b"
)

# Dates tied to a person.
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_ROMAN_MONTH = r"(?:i{1,3}|iv|vi{0,3}|ix|xi{0,2})"
_DSEP = r"\s*[-/._]\s*|\s+"  # between the parts of a date: any separator style
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MON = r"(?:0?[1-9]|1[0-2])"
_DATE = (
    r"(?:\d{4}(?:" + _DSEP + r")\d{1,2}(?:" + _DSEP + r")\d{1,2}"
    r"|\d{1,2}(?:" + _DSEP + r")\d{1,2}(?:" + _DSEP + r")(?:\d{4}|'?\d{2})"
    r"|(?:19|20)\d{2}"
    + _MON.replace("0?", "0")
    + _DAY.replace("0?", "0")
    + r"|"
    + _MON.replace("0?", "0")
    + _DAY.replace("0?", "0")
    + r"(?:19|20)\d{2}"
    r"|" + _DAY.replace("0?", "0") + _MON.replace("0?", "0") + r"(?:19|20)\d{2}"
    r"|" + _MONTH + r"(?:" + _DSEP + r")\d{1,2}(?:st|nd|rd|th)?,?(?:" + _DSEP + r")(?:\d{4}|'\d{2})"
    r"|\d{1,2}(?:st|nd|rd|th)?(?:"
    + _DSEP
    + r")(?:of\s+)?"
    + _MONTH
    + r",?(?:"
    + _DSEP
    + r")(?:\d{4}|'?\d{2})"
    r"|\d{4}(?:" + _DSEP + r")" + _MONTH + r"(?:" + _DSEP + r")\d{1,2}"
    r"|\d{1,2}(?:" + _DSEP + r")" + _ROMAN_MONTH + r"(?:" + _DSEP + r")\d{4}"
    r"|" + _MONTH + r",?\s+\d{4}|\d{4}[-/.]\d{1,2}|\d{1,2}[-/.]\d{4})(?![\d/-])"
)
_DATE_CTX_RE = re.compile(
    r"(?i)(?<![\w.])(?:b\.(?=\s*\d)|d\.?o\.?b\.?|date"
    + _S
    + r"of"
    + _S
    + r"birth|dt\.?"
    + _S
    + r"of"
    + _S
    + r"birth|birth"
    + _S
    + r"(?:date|dt\.?|day)|b"
    + _S
    + r"day|b'day|born"
    r"|date" + _S + r"of" + _S + r"death|death" + _S + r"(?:date|dt\.?)|d\.?o\.?d\.?|died"
    r"|deceased|death|passed\s+away"
    r"|date" + _S + r"of" + _S + r"admission|admission(?:" + _S + r"(?:date|dt\.?))?"
    r"|adm\.?" + _S + r"(?:date|dt\.?)|admit(?:ted)?(?:" + _S + r"(?:date|dt\.?))?|d\.?o\.?a\.?"
    r"|date" + _S + r"of" + _S + r"discharge|discharged?(?:" + _S + r"(?:date|dt\.?))?"
    r"|disch\.?(?:" + _S + r"(?:date|dt\.?))?|d/c" + _S + r"(?:date|dt\.?)"
    r"|date" + _S + r"of" + _S + r"service|service" + _S + r"date)(?!(?-i:[a-z]))"
    r"(?:\s*\((?:[dmy]{1,4}[-/. ]?){2,3}\))?"  # a format hint: "DOB (mm/dd/yyyy): ..."
    r"(?:\s*[:=#,.|/-])*\s*(?:(?:on|date|dt|was|is|of|at|in|to|the|a|icu|er|ed|hospital"
    r"|ward|unit|home|from|d)(?![a-z])[\s:.=#,-]*){0,3}" + _DATE
)
_AGE_AFTER_RE = re.compile(
    r"(?i)(?<![\w.])(?:age|aged)(?:\s*\((?:yrs?|years|y)\))?\s*(?:[:=]\s*|(?:of|is|was)\s+)?"
    r"(\d{2,3})(?:\.\d+)?(?![\d.]?\d)"
    r"(?!\s*(?:\+|-|\u2013|to\b|and\b|or\b|through\b|%|plus\b|years?\s+(?:and|or)\s+(?:older|over)"
    r"|(?:days?|weeks?|months?|hours?|hrs?|minutes?|mins?|seconds?|secs?|ms|s|h|d)\b))"
)
_AGE_BEFORE_RE = re.compile(
    r"(?i)(?<![\w.\-\u2013/+])(\d{2,3})\s*-?\s*(?:(?:years?|yrs?|y)(?:\s*-?\s*old|\s+of\s+age)"
    r"|(?:yo|y/o|y-o|y\.o\.?)(?:\s*-?\s*old)?)(?![a-z])(?!\s*(?:and|or)\s+(?:older|over|above))"
)
_UNITS = sorted(_words("one two three four five six seven eight nine"))
_TEENS = sorted(
    _words("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen")
)
# An age of 90 to 125 written out ("ninety-two", "one hundred and three").
_AGE_WORDS = (
    r"(ninety(?:[\s-]?(?:" + "|".join(_UNITS) + r"))?|(?:one\s+|a\s+)?hundred(?:\s+(?:and\s+)?"
    r"(?:twenty(?:[\s-]?(?:one|two|three|four|five))?|" + "|".join(_TEENS + _UNITS) + r"))?)"
)
_AGE_WORDS_RE = re.compile(
    r"(?i)(?<![\w.])(?:(?:age|aged)\s*(?:[:=]\s*|(?:of|is|was)\s+)?" + _AGE_WORDS + r"(?![a-z-])"
    r"(?!\s*(?:\+|-|to\b|and\b|or\b|plus\b|years?\s+(?:and|or)\b|days?\b|weeks?\b|months?\b))"
    r"|" + _AGE_WORDS + r"[\s-]*(?:years?|yrs?)(?:[\s-]*old|\s+of\s+age)(?![a-z])"
    r"(?!\s*(?:and|or)\s+(?:older|over|above)))"
)
_AGE_NEGATING_BEFORE_RE = re.compile(
    r"(?i)(?:over|above|under|below|than|least|most|>|<|≥|≤|>=|<=|\+)\s*$"
)

# Person names in context. A name word: capitalised, letters ("Doe", "O'Brien", "Smith-Jones").
_CAP = r"(?:[A-Z]['\u2019])?[A-Z][a-z]+(?:[A-Z][a-z]+)?(?:['\u2019-][A-Z]?[a-z]+)?"
# After a strong context (a title with its period, "patient:", "name:"): also in capitals.
_CAP_OR_UPPER = r"(?:" + _CAP + r"|[A-Z]{2,}(?:['\u2019-][A-Z]+)?)"
_TITLE_RE = re.compile(
    r"(?<![\w.])(?:(?:Mr|Mrs|Ms|Mx|Dr|Prof|Mister|MR|MRS|MS|DR|PROF)\.\s*(?:[A-Z]\.\s*)?"
    + _CAP_OR_UPPER
    + r"|(?:Mr|Mrs|Ms|Mx|Dr|Prof|Mister)\s+(?:[A-Z]\.\s*)?"
    + _CAP
    + r")\b"
)
_PERSON_CTX_RE = re.compile(
    r"(?<![\w.])(?i:(pt\.|pt|patient|subject|participant|resident|decedent|beneficiary|enrollee"
    r"|mother|father|spouse|wife|husband|son|daughter|brother|sister|guardian|sibling"
    r"|next\s+of\s+kin|nok))(?![a-z])(\s*[:=#|>-]+)?\s+(?:[A-Z]\.\s*)?(" + _CAP_OR_UPPER + r")\b"
    r"(?:\s+(?:[A-Z]\.\s+)?(" + _CAP_OR_UPPER + r")\b)?"
)
_NAME_LABEL_RE = re.compile(
    r"(?<![\w.])(?i:(?:(full|first|last|given|family|maiden|patient|subject|pt|pt\.)" + _S + r")?"
    r"(name|surname|nm))\s*[:=|>-]+\s*(?:[A-Z]\.\s*)?(" + _CAP_OR_UPPER + r")\b"
    r"|(?<![\w.])(?i:named|aka|a\.k\.a\.|alias)\s+(?:[A-Z]\.\s*)?(" + _CAP + r")\b"
)
_FULL_NAME_RE = re.compile(r"\b(" + _CAP + r")(?=\s+(?:[A-Z]\.\s+)?(" + _CAP + r")\b)")
_NAME_AGE_RE = re.compile(
    r"\b(" + _CAP + r")\s+(" + _CAP + r"),\s*(\d{1,3})(?!\d)"
    r"(\s*(?:y/?o|yrs?|years?(?:\s+old)?|[MF]|male|female)(?![A-Za-z]))?"
)
# Endings of ordinary English words, not of names: a capitalised word after "Patient" that
# ends so is a stage's vocabulary ("Patient Matching", "Patient Stratification").
_VOCABULARY_ENDINGS = (
    "ing", "tion", "sion", "ment", "ness", "ity", "ics", "ology", "ysis", "ised", "ized",
    "able", "ible", "ous", "ful", "less", "ism", "ings", "ments", "ions",
    "ware", "ship", "hood", "ward", "wise", "ance", "ances", "ation", "ations",
)  # fmt: skip
# Verbs that, after "Patient <Name>", say a person did or underwent something. Verbs that a
# stage does too ("completed", "finished", "started", "updated") are not among them: after
# "Participant Diary Upload" they say nothing about a person.
_PERSON_VERBS: frozenset[str] = _words(
    """
    enrolled enroled consented withdrew withdrawn excluded included admitted discharged died
    deceased expired was is has had declined refused randomised randomized screened
    rescheduled transferred contacted notified seen visited reported presented missed dropped
    reconsented re-consented lives lived born aged age agreed signed called emailed requested
    asked attended recovered relapsed survived underwent relocated passed tested phoned
    wrote complained denied
    """
)
# A capitalised word followed by another: a title-case noun phrase ("Patient Reported
# Outcomes"), not a clause about a person ("Patient reported chest pain").
_TITLE_PHRASE_RE = re.compile(r"[A-Z][a-z]+\s+[A-Z]")
_PREV_WORD_RE = re.compile(r"([A-Za-z]+)[^A-Za-z]*$")
_UPPER_WORD_NEXT_RE = re.compile(r"\s+[A-Z]{2,}\b")
# The word just before, with only spaces between: not across the " | " of a joint scan.
_WORD_BEFORE_RE = re.compile(r"([A-Za-z][A-Za-z'-]*)\s+$")
_NEXT_WORD_RE = re.compile(r"\s*([,;:()]|[A-Za-z][A-Za-z'-]*)?")
# Addresses written with words or spaces for their separators ("jane at example dot com",
# "jane.doe at example.com", "jane @ example.com", "www dot example dot org").
_TLD = (
    r"(?:com|org|net|edu|gov|mil|int|info|biz|io|co|us|uk|ca|de|fr|nl|au|jp|cn|in|eu|ch|se"
    r"|es|it|ie|nz|me|health|med|app|dev|ai)"
)
_DOT_SEP = r"(?:\s*\.\s*|\s+(?:dot|period)\s+)"
# A spaced "@" ("jane @ example.com"); an "@" with no space beside it is _EMAIL_RE's.
_AT_SEP_RE = re.compile(r"(?i)\s+at\s+|\s+@\s*|@\s+")
_LOCAL_PART_RE = re.compile(r"(?i)(?<![\w.%+-])[a-z0-9][\w.%+-]{0,63}$")
_DOMAIN_WORDS_RE = re.compile(
    r"(?i)[a-z0-9-]{1,63}(?:"
    + _DOT_SEP
    + r"[a-z0-9-]{1,63}){0,8}?"
    + _DOT_SEP
    + _TLD
    + r"(?![\w-])"
)
# " dot com" after a letter or digit ("example dot com"): found by its TLD, so that a long
# run of "a dot a dot ..." costs one pass.
_DOT_WORD_TLD_RE = re.compile(r"(?i)\s(?:dot|period)\s+" + _TLD + r"(?![\w-])")
_WWW_WORDS_RE = re.compile(
    r"(?i)(?<![\w.])www" + _DOT_SEP + r"[a-z0-9-]{1,63}(?:" + _DOT_SEP + r"[a-z0-9-]{1,63}){1,8}"
)
# A domain followed by a path ("example.com/patients/12"): a URL without its scheme.
_DOMAIN_PATH_RE = re.compile(r"\.(?<=[A-Za-z0-9]\.)(?i:" + _TLD[3:-1] + r")/(?=[\w~%-])")
# A bare domain after a word that says it is a web address ("site: example.org").
_URL_CTX_RE = re.compile(
    r"(?i)(?<![\w.])(?:url|link|site|website|web\s*site|homepage|domain|visit)(?![a-z])"
    r"\s*[:=]?\s*(?:at\s+)?[a-z0-9][a-z0-9-]{0,62}(?:\.[a-z0-9-]{1,63})*\." + _TLD + r"(?![\w-])"
)
_PREV_WORD_RE = re.compile(r"([A-Za-z]+)[^A-Za-z]*$")

_HEALTH_RE = re.compile(
    r"(?i)(?<![\w.])(?:patient|pt\.?|subject|participant)\s+(?P<verb>has|had|presents|presented"
    r"|reports|reported|complains|complained|denies|denied|developed|underwent|suffers"
    r"|suffered|sustained|was\s+diagnosed|is\s+diagnosed|diagnosed|tested\s+(?:positive|negative)"
    r"|died|expired|was\s+admitted|was\s+discharged|is\s+on|was\s+prescribed|takes|is\s+taking"
    r"|was\s+treated|is\s+being\s+treated|with\s+(?:a\s+)?(?:history|hx)\s+of|c/o)(?![a-z])"
)

# --------------------------------------------------------------------------------------------
# Field names
# --------------------------------------------------------------------------------------------

_KEY_TOKEN_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
SAFE_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_PHI_KEY_TOKENS: frozenset[str] = _words(
    """
    ssn ssns mrn mrns dob diagnosis diagnoses surname birthdate birthday dod imei vin mbi hicn
    medicaid fingerprint fingerprints voiceprint retina biometric biometrics passport deceased
    maiden nok npi
    """
)
_PHI_KEYS_JOINED: frozenset[str] = _words(
    """
    dateofbirth birthdate dateofdeath deathdate admissiondate admitdate dischargedate
    dateofadmission dateofdischarge socialsecurity socialsecuritynumber medicalrecord
    medicalrecordnumber firstname lastname fullname givenname familyname middlename
    streetaddress homeaddress mailingaddress address addressline addressline1 addressline2
    phone phonenumber telephone mobile mobilenumber cellphone homephone workphone fax faxnumber
    zip zipcode postalcode postcode healthplan healthplanid healthplannumber memberid
    membernumber subscriberid policynumber insuranceid insurancenumber accountnumber
    bankaccount creditcard creditcardnumber licensenumber licencenumber driverslicense
    driverlicense licenseplate licenceplate certificatenumber serialnumber deviceserial
    deviceserialnumber udi macaddress ipaddress vehicleid photo photograph facephoto faceimage
    headshot
    """
)
_KEY_IDENTITY_STRONG: frozenset[str] = frozenset(
    {"patient", "patients", "pt", "beneficiary", "enrollee", "insured", "decedent", "guarantor"}
)
_KEY_IDENTITY_WEAK: frozenset[str] = _words(
    """
    subject subjects participant participants member person individual resident client mother
    father spouse guardian kin relative child parent
    """
)
_KEY_ATTR_PERSONAL: frozenset[str] = _words(
    """
    name names dob ssn mrn address addr street city zip zipcode postcode phone fax email birth
    birthday birthdate age initials photo contact first last full surname demographics
    """
)
_KEY_ATTR_ID: frozenset[str] = frozenset(
    {"id", "ids", "identifier", "identifiers", "number", "num", "no", "record", "records"}
)


def key_is_phi(key: str) -> bool:
    tokens = [t.lower() for t in _KEY_TOKEN_RE.findall(key)]
    if not tokens:
        return False
    if "".join(tokens) in _PHI_KEYS_JOINED:
        return True
    token_set = set(tokens)
    if not token_set.isdisjoint(_PHI_KEY_TOKENS):
        return True
    if not token_set.isdisjoint(_KEY_ATTR_PERSONAL) and not (
        token_set.isdisjoint(_KEY_IDENTITY_STRONG) and token_set.isdisjoint(_KEY_IDENTITY_WEAK)
    ):
        return True
    return not token_set.isdisjoint(_KEY_ATTR_ID) and not token_set.isdisjoint(_KEY_IDENTITY_STRONG)


# --------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    """Presidio-style: reject impossible SSNs (area 000/666/9xx, group 00, serial 0000, 1 digit)."""
    if area == "000" or area == "666" or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    digits = area + group + serial
    return digits.count(digits[0]) != len(digits)


_VIN_VALUES: dict[str, int] = {str(d): d for d in range(10)} | dict(
    zip(
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9],
        strict=True,
    )
)
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def _vin_valid(vin: str) -> bool:
    """ISO 3779 / North American check digit (position 9), letters I, O and Q excluded."""
    vin = vin.upper()
    if len(vin) != 17 or vin.isdigit() or vin.isalpha():
        return False
    total = 0
    for char, weight in zip(vin, _VIN_WEIGHTS, strict=True):
        value = _VIN_VALUES.get(char)
        if value is None:
            return False
        total += value * weight
    check = total % 11
    return vin[8] == ("X" if check == 10 else str(check))


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_valid(raw: str) -> bool:
    """A payment card number: a known issuer prefix, that issuer's length, and Luhn."""
    digits = "".join(c for c in raw if c.isdigit())
    length = len(digits)
    first, two = digits[0], digits[:2]
    if first == "4":
        ok = length in (13, 16, 19)
    elif two in ("34", "37"):
        ok = length == 15
    elif two in ("36", "38", "30"):
        ok = length == 14
    elif "51" <= two <= "55" or "2221" <= digits[:4] <= "2720":
        ok = length == 16
    elif first == "6" or two == "35":
        ok = 16 <= length <= 19
    else:
        ok = False
    return ok and digits.count(first) != length and _luhn_valid(digits)


def _id_ok(token: str, min_digits: int = 3) -> bool:
    """An identifier after a context word: enough digits, and not a quantity like '500ms'."""
    if len(token) < 4 or sum(c.isdigit() for c in token) < min_digits:
        return False
    return _UNIT_SUFFIX_RE.search(token) is None


def _ipv4_valid(match: re.Match[str]) -> bool:
    octets = match.groups()
    if any(len(o) > 1 and o[0] == "0" for o in octets):
        return False  # leading zeros: a version or a date, not an address
    values = [int(o) for o in octets]
    if any(v > 255 for v in values):
        return False
    # Unspecified and loopback addresses identify nobody, and neither does a network written
    # with its two host octets zero ("10.20.0.0"); that shape is far more often a four-part
    # version ("GATK 4.5.0.0").
    return not (values[0] == 0 or values[0] == 127 or values[2] == values[3] == 0)


_VERSION_WORDS: frozenset[str] = frozenset(
    {"v", "version", "ver", "build", "release", "rev", "oid"}
)


def _ipv6_valid(candidate: str) -> bool:
    if sum(1 for group in candidate.split(":") if group) < 2:
        return False  # "::1", "x[::2]"
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def _previous_word(text: str, end: int) -> str:
    match = _PREV_WORD_RE.search(text, max(0, end - 40), end)
    return match.group(1).lower() if match else ""


# --------------------------------------------------------------------------------------------
# The text scanner
# --------------------------------------------------------------------------------------------


def _scan_token(text: str, out: set[str]) -> None:
    """A plain token ([A-Za-z0-9_]+): an id, an enum, a username. Few detectors can fire."""
    if len(text) == 17 and text.isupper() and _vin_valid(text):
        out.add(VEHICLE_IDENTIFIER)
    if text.isdigit():
        if 13 <= len(text) <= 19 and _card_valid(text):
            out.add(ACCOUNT_NUMBER)
    elif text[:3].lower() in _GLUED_STARTS:
        match = _GLUED_RE.match(text)
        if match is not None:
            out.add(_GLUED_CATEGORY[match.group(1).lower()])


def _vocabulary(word: str) -> bool:
    """A capitalised word more likely a stage's vocabulary than a name ("Matching", "Cohort",
    "Stratification"): listed as such, or ending like an ordinary English word."""
    lower = word.lower()
    if lower in _COMMON_WORDS or lower in _THING_NOUNS:
        return True
    if lower in _FIRST_NAMES or lower in _SURNAMES:
        return False
    return lower.endswith(_VOCABULARY_ENDINGS) or (len(lower) >= 6 and lower.endswith("ed"))


def _in_a_sentence(text: str, match: re.Match[str]) -> tuple[bool, str]:
    """(the words around a match read as a sentence about a person, the word after it). A
    title-case stage name ("Patient Graph Builder", "Participant Diary Upload finished") is
    capitalised throughout or goes on with what a stage does; a sentence that names a person
    goes on with what a person does, or a comma, or has lower-case words before the context
    word ("Patient Zoltan Varga enrolled", "Varga, 67", "re-run for Patient Zoltan Varga")."""
    after = _NEXT_WORD_RE.match(text, match.end())
    following = after.group(1) if after is not None and after.group(1) else ""
    if following.lower() in _PERSON_VERBS or following[:1] in (",", ";", "("):
        return True, following
    before = _WORD_BEFORE_RE.search(text, max(0, match.start() - 40), match.start())
    return before is not None and before.group(1)[:1].islower(), following


def _scan_person_context(text: str) -> bool:
    for match in _PERSON_CTX_RE.finditer(text):
        keyword, punct, word, second = (
            match.group(1),
            match.group(2),
            match.group(3),
            match.group(4),
        )
        if word.lower() in _COMMON_WORDS:
            continue
        if word.isupper():
            # "PT: ZOLTAN VARGA": capitals only after punctuation, and only as two words (one
            # upper-case word after "patient" is an acronym: "patient MRN", "subject: PHI").
            if punct is None or second is None or not second.isupper():
                continue
            if second.lower() in _COMMON_WORDS:
                continue
            return True
        strong = keyword[0].islower() or keyword.lower() == "pt." or punct is not None
        if strong or word.lower() in _FIRST_NAMES or word.lower() in _SURNAMES:
            return True
        # "Patient Zoltan Varga enrolled": a title-case context word and names that are in no
        # list. Only where the text reads as a sentence, and no word reads as vocabulary.
        if _vocabulary(word) or (second is not None and _vocabulary(second)):
            continue
        sentence, following = _in_a_sentence(text, match)
        if second is not None and second.isupper():
            continue
        if second is not None and sentence:
            return True
        if second is None and following.lower() in _PERSON_VERBS:
            return True
    return False


def _scan_names(text: str, out: set[str]) -> None:
    for match in _TITLE_RE.finditer(text):
        word = text[match.start() : match.end()].rsplit(None, 1)[-1].split(".")[-1]
        if word.isupper() and (len(word) < 3 or word.lower() in _COMMON_WORDS):
            continue  # "Dr. QC", "Prof. ALL"
        out.add(PERSON_NAME)
        return
    if _scan_person_context(text):
        out.add(PERSON_NAME)
        return
    for match in _NAME_LABEL_RE.finditer(text):
        word = match.group(3) or match.group(4)
        if word.lower() in _COMMON_WORDS:
            continue
        if word.isupper() and not _UPPER_WORD_NEXT_RE.match(text, match.end()):
            continue  # "name: ICU" - capitals count only as two words ("NAME: JOHN DOE")
        if match.group(3) is not None and match.group(1) is None:
            # bare "name: X" - unless it is a thing's name ("Stage name: Data Ingestion")
            if _previous_word(text, match.start()) in _THING_NOUNS:
                continue
        elif match.group(4) is not None and _previous_word(text, match.start()) in _THING_NOUNS:
            continue  # "a file named Results"
        out.add(PERSON_NAME)
        return
    for match in _FULL_NAME_RE.finditer(text):
        if match.group(1).lower() in _FIRST_NAMES and match.group(2).lower() in _SURNAMES:
            out.add(PERSON_NAME)
            return


def _scan_name_age(text: str, out: set[str]) -> None:
    """'John Doe, 45' / 'Jane Roe, 93 F': a name followed by an age."""
    for match in _NAME_AGE_RE.finditer(text):
        first, last, age, marker = match.group(1), match.group(2), match.group(3), match.group(4)
        if first.lower() in _COMMON_WORDS or last.lower() in _COMMON_WORDS:
            continue
        rest = text[match.end() :].lstrip()
        if marker is None and rest and rest[0] not in ",;.)":
            continue
        if marker is None and first.lower() not in _FIRST_NAMES and last.lower() not in _SURNAMES:
            continue
        out.add(PERSON_NAME)
        if 90 <= int(age) <= 125:
            out.add(AGE_OVER_89)


def _scan_context_ids(
    pattern: re.Pattern[str], category: str, text: str, out: set[str], min_digits: int = 3
) -> None:
    for match in pattern.finditer(text):
        if _id_ok(match.group(match.lastindex or 1), min_digits):
            out.add(category)
            return


def _scan_phones(text: str, bits: int, digits: int, out: set[str]) -> None:
    fax_spans: list[tuple[int, int]] = []
    if bits & _B_FAX:
        for match in _FAX_CTX_RE.finditer(text):
            if 7 <= sum(c.isdigit() for c in match.group(1)) <= 15:
                out.add(FAX_NUMBER)
                fax_spans.append(match.span(1))

    def outside_fax(match: re.Match[str], group: int = 0) -> bool:
        start, end = match.span(group)
        return all(end <= s or start >= e for s, e in fax_spans)

    if digits >= 10:
        for match in _PHONE_US_RE.finditer(text):
            if outside_fax(match):
                out.add(PHONE_NUMBER)
                return
    if digits >= 8 and "+" in text:
        for match in _PHONE_INTL_RE.finditer(text):
            if 8 <= sum(c.isdigit() for c in match.group(0)) <= 15 and outside_fax(match):
                out.add(PHONE_NUMBER)
                return
    if bits & _B_PHONE:
        for match in _PHONE_CTX_RE.finditer(text):
            if 7 <= sum(c.isdigit() for c in match.group(1)) <= 15 and outside_fax(match, 1):
                out.add(PHONE_NUMBER)
                return


def _scan_state_zip(text: str, out: set[str]) -> None:
    """A 5-digit number right after a US state ('MA 02139', 'Boise, ID 83702', 'Texas 75001')."""
    for match in _FIVE_DIGITS_RE.finditer(text):
        before = _STATE_BEFORE_RE.search(text, max(0, match.start() - 30), match.start())
        if before is None:
            continue
        code_c, code, name = before.group("code_c"), before.group("code"), before.group("name")
        if (code_c is not None and code_c in _US_STATE_CODES) or (
            code is not None and code in _US_STATE_CODES and code not in _AMBIGUOUS_STATE_CODES
        ):
            out.add(ZIP_CODE)
            return
        if name is not None and (
            name.lower() in _US_STATE_NAMES or name.split()[-1].lower() in _US_STATE_NAMES
        ):
            out.add(ZIP_CODE)
            return


def _scan_numeric(text: str, bits: int, digits: int, out: set[str]) -> None:
    """Detectors for identifiers that contain digits.

    ``digits`` counts the digits in ``text``: shapes that need more (an SSN 9, a US phone 10,
    a ZIP 5, a card 13) are not even tried.
    """
    if digits >= 9:
        for match in _SSN_SHAPE_RE.finditer(text):
            if _ssn_valid(match.group(1), match.group(3), match.group(4)):
                out.add(SSN)
                break
    if bits & _B_SSN:
        for match in _SSN_CTX_RE.finditer(text):
            if _ssn_valid(match.group(1), match.group(2), match.group(3)):
                out.add(SSN)
                break
    if digits >= 10 or (digits >= 8 and "+" in text) or (digits >= 7 and bits & _B_PHONE_OR_FAX):
        _scan_phones(text, bits, digits, out)
    if digits >= 5:
        if "-" in text and _ZIP4_RE.search(text):
            out.add(ZIP_CODE)
        else:
            _scan_state_zip(text, out)
    if bits & _B_ZIP and _ZIP_CTX_RE.search(text):
        out.add(ZIP_CODE)
    if digits >= 13:
        for match in _CARD_RE.finditer(text):
            if _card_valid(match.group(0)):
                out.add(ACCOUNT_NUMBER)
                break
    if digits >= 4 and text.count(".") >= 3:
        for match in _IPV4_RE.finditer(text):
            if _ipv4_valid(match) and _previous_word(text, match.start()) not in _VERSION_WORDS:
                out.add(IP_ADDRESS)
                break
    colons = text.count(":")
    if colons >= 2:
        for match in _IPV6_CANDIDATE_RE.finditer(text):
            if _ipv6_valid(match.group(0)):
                out.add(IP_ADDRESS)
                break
    if (colons >= 5 or text.count("-") >= 5) and _MAC_RE.search(text):
        out.add(DEVICE_IDENTIFIER)
    if len(text) >= 17 and digits >= 2:
        for match in _VIN_RE.finditer(text):
            if _vin_valid(match.group(0)):
                out.add(VEHICLE_IDENTIFIER)
                break
    if "(01)" in text and _UDI_GS1_RE.search(text):
        out.add(DEVICE_IDENTIFIER)
    if not bits:
        return
    if bits & _B_NAME_AGE and "," in text:
        _scan_name_age(text, out)
    if bits & _B_MRN:
        _scan_context_ids(_MRN_RE, MEDICAL_RECORD_NUMBER, text, out)
    if bits & _B_PLAN:
        _scan_context_ids(_PLAN_RE, HEALTH_PLAN_NUMBER, text, out)
    if bits & _B_ACCOUNT:
        _scan_context_ids(_ACCOUNT_RE, ACCOUNT_NUMBER, text, out)
    if bits & _B_LICENSE:
        _scan_context_ids(_LICENSE_RE, LICENSE_NUMBER, text, out)
    if bits & _B_CERT:
        _scan_context_ids(_CERT_RE, CERTIFICATE_NUMBER, text, out, min_digits=4)
    if bits & _B_DEVICE:
        _scan_context_ids(_DEVICE_RE, DEVICE_IDENTIFIER, text, out)
    if bits & _B_VEHICLE:
        if _VIN_CTX_RE.search(text):
            out.add(VEHICLE_IDENTIFIER)
        for match in _PLATE_RE.finditer(text):
            plate = match.group(1)
            if any(c.isdigit() for c in plate) and 2 <= sum(c.isalnum() for c in plate) <= 8:
                out.add(VEHICLE_IDENTIFIER)
                break
    if bits & _B_BIOMETRIC:
        for match in _BIOMETRIC_RE.finditer(text):
            if _previous_word(text, match.start()) in _NON_BIOMETRIC_PREFIX:
                continue
            if _id_ok(match.group(1), 2):
                out.add(BIOMETRIC_IDENTIFIER)
                break
    if bits & _B_ADDRESS and (
        _STREET_RE.search(text)
        or _STREET_ANY_CASE_RE.search(text)
        or _PO_BOX_RE.search(text)
        or _ADDRESS_LABEL_RE.search(text)
    ):
        out.add(STREET_ADDRESS)
    if bits & _B_DATE and _DATE_CTX_RE.search(text):
        out.add(DATE_OF_BIRTH)
    if bits & _B_AGE:
        _scan_ages(text, out)


def _scan_ages(text: str, out: set[str]) -> None:
    for pattern in (_AGE_AFTER_RE, _AGE_BEFORE_RE):
        for match in pattern.finditer(text):
            if not 90 <= int(match.group(1)) <= 125:
                continue
            if _AGE_NEGATING_BEFORE_RE.search(text, max(0, match.start() - 16), match.start()):
                continue  # "over 90 years", "> 90 yo": an aggregate bound, not an age
            out.add(AGE_OVER_89)
            return


def _email_in_words(text: str, match: re.Match[str]) -> bool:
    """An address around an "at" or a spaced "@" ("jane at example dot com", "jane.doe at
    example.com", "jane @ example.com"). A plain "at" between two words needs more than a
    domain after it ("uploaded at s3.amazonaws.com" is a place): a "dot" word, an upper-case
    "AT", or a local part shaped like one (a dot, plus, underscore or digit)."""
    local = _LOCAL_PART_RE.search(text, max(0, match.start() - 64), match.start())
    if local is None:
        return False
    domain = _DOMAIN_WORDS_RE.match(text, match.end())
    if domain is None:
        return False
    separator = match.group(0)
    if "@" in separator:
        return True
    written = domain.group(0).lower()
    if " dot " in written or " period " in written or separator.strip() == "AT":
        return True
    return any(c in local.group(0) for c in "._+%") or any(c.isdigit() for c in local.group(0))


def _dot_word_domain(text: str) -> bool:
    """A domain written with "dot" words ("example dot com")."""
    return any(
        match.start() > 0 and text[match.start() - 1].isalnum()
        for match in _DOT_WORD_TLD_RE.finditer(text)
    )


def _scan_written_addresses(text: str, bits: int, out: set[str]) -> None:
    """E-mail addresses and URLs written with words or spaces for their separators, and URLs
    without a scheme (a domain with a path, or after "site:"/"url:")."""
    if EMAIL_ADDRESS not in out and (bits & _B_AT or "@" in text):
        for match in _AT_SEP_RE.finditer(text):
            if _email_in_words(text, match):
                out.add(EMAIL_ADDRESS)
                break
    if URL in out:
        return
    if (
        (bits & _B_WWW and _WWW_WORDS_RE.search(text))
        or (bits & _B_DOT and EMAIL_ADDRESS not in out and _dot_word_domain(text))
        or ("/" in text and "." in text and _DOMAIN_PATH_RE.search(text))
        or (bits & _B_URL_CTX and "." in text and _URL_CTX_RE.search(text))
    ):
        out.add(URL)


def detect(text: str, out: set[str]) -> None:
    """Add the categories found in one normalised string to ``out``."""
    length = len(text)
    if length < 5:
        if length == 4 and text[:2].isdigit() and text[2:].lower() == "yo" and text[0] == "9":
            out.add(AGE_OVER_89)  # "92yo": the one identifier this short
        return
    if length <= 64 and _TOKEN_RE.fullmatch(text) is not None:
        _scan_token(text, out)
        return
    if length <= 40 and _ISO_TIMESTAMP_RE.fullmatch(text) is not None:
        return
    lower = text.lower()
    bits = 0
    for word in _WORD_RE.findall(lower):
        bits |= _TRIGGERS.get(word, 0)
    if _CAMEL_RE.search(text) is not None:
        # Labels written in camel case ("HospitalNumber", "DateOfBirth"): their words too.
        for word in _CAMEL_WORD_RE.findall(text):
            bits |= _TRIGGERS.get(word.lower(), 0)
    if "/" in text and "a/c" in lower:
        bits |= _B_ACCOUNT
    if "@" in text and _EMAIL_RE.search(text):
        out.add(EMAIL_ADDRESS)
    if ("//" in text or "www." in lower) and _URL_RE.search(text):
        out.add(URL)
    if (
        bits & (_B_AT | _B_DOT | _B_WWW | _B_URL_CTX)
        or "@" in text
        or ("/" in text and "." in text)
    ):
        _scan_written_addresses(text, bits, out)
    if bits & _B_AGE_WORDS and _AGE_WORDS_RE.search(text):
        out.add(AGE_OVER_89)
    if text.isascii():
        encoded = text.encode()
        digits = len(encoded) - len(encoded.translate(None, b"0123456789"))
    else:
        digits = sum(len(run) for run in _DIGIT_RUN_RE.findall(text))
    if digits:
        _scan_numeric(text, bits, digits, out)
    else:
        bits &= _B_NO_DIGIT_NEEDED
    if bits & _B_NAME:
        _scan_names(text, out)
    if bits & _B_HEALTH:
        for match in _HEALTH_RE.finditer(text):
            if _TITLE_PHRASE_RE.match(text, match.start("verb")) is None:
                out.add(HEALTH_INFORMATION)
                break
