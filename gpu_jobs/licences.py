"""The licence gate: a commercial deployment refuses weights whose licence forbids commercial use.

Every model spec in `ModelConfig` declares `licence` (an SPDX-like id) and `commercial_use`. The gate
trusts neither alone: a spec that says `commercial_use: true` with a licence id known to be
non-commercial is refused too, since that is a configuration mistake worth stopping on.

    from gpu_jobs.licences import LicenceError, check_licence

    check_licence(config.base, commercial=config.commercial)   # raises LicenceError when refused
"""

from typing import Protocol

# Licence ids (lower-case) that forbid commercial use. CatVTON and IDM-VTON ship under CC BY-NC-SA 4.0;
# BRIA RMBG under its own non-commercial licence; FLUX.1 [dev] under a non-commercial licence.
NON_COMMERCIAL_LICENCES: frozenset[str] = frozenset(
    {
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-3.0",
        "cc-by-nc-sa-3.0",
        "bria-rmbg-1.4",
        "bria-rmbg-2.0",
        "flux-1-dev-non-commercial-license",
        "catvton",
        "idm-vton",
        "non-commercial",
        "research-only",
    }
)


class LicensedSpec(Protocol):
    """What the gate needs from a model spec."""

    @property
    def name(self) -> str: ...
    @property
    def licence(self) -> str: ...
    @property
    def commercial_use(self) -> bool: ...


class LicenceError(ValueError):
    """A model's licence does not allow the use this deployment is configured for."""


def is_non_commercial(licence: str) -> bool:
    """True when the licence id is one known to forbid commercial use."""
    return licence.strip().lower() in NON_COMMERCIAL_LICENCES


def check_licence(spec: LicensedSpec, commercial: bool) -> None:
    """Refuse `spec` when the deployment is commercial and the weights are not licensed for it."""
    if not commercial:
        return
    if not spec.commercial_use or is_non_commercial(spec.licence):
        raise LicenceError(
            f"model '{spec.name}' is licensed '{spec.licence}', which does not allow commercial use, and this "
            "deployment is configured as commercial (ModelConfig.commercial or the brand profile's `commercial`). "
            "Use weights licensed for commercial use, or set `commercial: false` only if this really is "
            "a non-commercial deployment."
        )
