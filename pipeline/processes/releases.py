"""Whether an installed library is a release a module using its private names was tested
with: the module takes the library's own public path otherwise, said in one warning line."""

import logging

log = logging.getLogger(__name__)


def tested(library: str, version: str, releases: tuple[str, ...], otherwise: str) -> bool:
    """Whether ``version`` of ``library`` starts with one of ``releases``; if not, one
    warning line ending with ``otherwise`` (what the module does instead)."""
    if version.startswith(releases):
        return True
    log.warning(
        "warning: %s %s is not one this project was tested with (%s): %s",
        library,
        version,
        ", ".join(f"{release}x" for release in releases),
        otherwise,
    )
    return False
