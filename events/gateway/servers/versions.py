"""The one check every server patch makes before it touches another project's internals.

A patch here replaces or wraps a function of daphne, autobahn, Twisted, uvicorn or channels, and
is only known to be right for the release it was read against: its module says which in
`WRITTEN_FOR` ({distribution: version}), and a test reads the patched source so an upgrade
fails there first. On any other release the process refuses to start rather than run a patch
that may no longer fit (`ImproperlyConfigured`, naming what to do).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version

from django.core.exceptions import ImproperlyConfigured


def installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def require(patch: str, written_for: Mapping[str, str], checked_by: str) -> None:
    """Raise ImproperlyConfigured unless every distribution is at the version `patch` was
    written for."""
    for distribution, wanted in written_for.items():
        found = installed(distribution)
        if found != wanted:
            raise ImproperlyConfigured(
                f"{patch} patches {distribution} {wanted} and {distribution} "
                f"{found or '(not installed)'} is installed. Install {distribution}=={wanted} "
                f"(requirements.lock), or re-check the patch against {found} ({checked_by}), then "
                f"update its WRITTEN_FOR and the pin in pyproject.toml and requirements.lock."
            )


def installs_once(
    written_for: Mapping[str, str], checked_by: str
) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Decorate a patch module's `install()`: every call checks the releases (`require`), the
    first one that passes applies the patch, later ones do nothing (a patch applied twice
    would wrap its own wrapper)."""

    def decorate(apply: Callable[[], None]) -> Callable[[], None]:
        applied = False

        @functools.wraps(apply)
        def install() -> None:
            nonlocal applied
            require(apply.__module__, written_for, checked_by)
            if not applied:
                apply()
                applied = True

        return install

    return decorate
