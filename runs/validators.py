"""Validators for user text that ends up in events, shared by the REST serializers and the admin.

They raise Django's `ValidationError`, which DRF serializers and Django forms both understand,
so the API and the admin refuse the same input with the same words. Messages name the field
and the PHI categories found, never the value: the value is what we must not spread (not to
the client's logs, not to ours).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

from events import metrics, phi

logger = logging.getLogger(__name__)

# Characters that break a one-line label: C0/C1 controls (incl. \n \r \t \x00) and the Unicode
# line/paragraph separators, which some renderers and log viewers also treat as a newline.
_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def has_breaking_characters(value: str) -> bool:
    return any(unicodedata.category(char) in _BREAKING_CATEGORIES for char in value)


def single_line(value: Any) -> None:
    """Refuse control characters and line breaks: names and statuses are one-line labels."""
    if isinstance(value, str) and has_breaking_characters(value):
        raise ValidationError(
            "must be a single line without control characters", code="control_characters"
        )


@deconstructible
class PhiSafe:
    """Refuse text in which the PHI scanner finds identifiers; the message names the categories.

    Fails closed: if the scanner itself breaks on some input, the text is refused rather than
    let through unchecked (the bus would scan it again, but a 400 here is the clearer answer).
    """

    code = "phi"

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name

    def __call__(self, value: Any) -> None:
        if not isinstance(value, str) or not value:
            return
        try:
            findings = phi.scan_text(value)
        except Exception as exc:
            logger.warning("PHI scan of %s failed (%s); refusing it", self.field_name, type(exc))
            raise ValidationError(
                "could not be checked for PHI; use plain text", code=self.code
            ) from None
        if findings:
            for category in set(findings):
                metrics.PHI_REJECTIONS.labels(category=category).inc()
            categories = ", ".join(sorted(set(findings)))
            logger.info("refused %s: possible PHI (%s)", self.field_name, categories)
            # The error is reported under the field's own key (or next to it in a form), so
            # the message need not repeat the name; the log line does.
            raise ValidationError(
                f"contains possible PHI ({categories}); remove patient identifiers",
                code=self.code,
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhiSafe) and other.field_name == self.field_name

    def __hash__(self) -> int:
        return hash((type(self), self.field_name))


def phi_safe_together(fields: dict[str, str | list[str]]) -> None:
    """Refuse labels that are clean one by one but carry PHI read side by side, as a page
    shows them (run name, stage names, status): "SSN 123" / "45" / "6789".

    Call it after each field passed `phi_safe`. The error is reported under every field
    involved and names the categories, never the values.
    """
    texts: list[str] = []
    for value in fields.values():
        texts.extend([value] if isinstance(value, str) else value)
    try:
        categories = phi.scan_texts(texts)
    except Exception as exc:
        logger.warning(
            "joint PHI scan of %s failed (%s); refusing it", ", ".join(fields), type(exc)
        )
        raise ValidationError(
            {name: "could not be checked for PHI; use plain text" for name in fields}
        ) from None
    if not categories:
        return
    for category in categories:
        metrics.PHI_REJECTIONS.labels(category=category).inc()
    logger.info(
        "refused %s read together: possible PHI (%s)", ", ".join(fields), ", ".join(categories)
    )
    raise ValidationError(
        {
            name: ValidationError(
                f"read together with {', '.join(other for other in fields if other != name)}, "
                f"contains possible PHI ({', '.join(categories)}); remove patient identifiers",
                code=PhiSafe.code,
            )
            for name in fields
        }
    )


def phi_safe(field_name: str) -> PhiSafe:
    """A validator refusing PHI in `field_name`.

    The error goes under the field's key (API) or next to the field (admin) and names the
    categories; `field_name` names the field in the log line.
    """
    return PhiSafe(field_name)
