"""Apple's own USDZ compliance check for AR Quick Look, as the tests run it."""

from __future__ import annotations

import warnings
from pathlib import Path

from pxr import UsdUtils


def arkit_problems(path: Path) -> list[str]:
    """What ``UsdUtils.ComplianceChecker(arkit=True)`` reports: errors and failed checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in favour of rules without ARKit's
        checker = UsdUtils.ComplianceChecker(arkit=True)
    checker.CheckCompliance(str(path))
    return [*checker.GetErrors(), *checker.GetFailedChecks()]
