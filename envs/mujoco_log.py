"""MuJoCo's warnings, once each, through Python's ``warnings`` (not stdout and ``MUJOCO_LOG.TXT``).

MuJoCo's default warning handler prints every warning to stdout and appends it to
``MUJOCO_LOG.TXT`` in the current folder. Every model load repeats the compiler's warnings (a
gymnasium MuJoCo v5 model under MuJoCo >= 3.3 warns that ``settotalmass`` is deprecated), so a
run that builds 1 probe + N training + M evaluation envs printed the same lines N + M + 1 times
and left a log file wherever it was started. :func:`route_mujoco_warnings` installs a handler
that forwards each distinct message once as a :class:`MujocoWarning`.
"""

from __future__ import annotations

import warnings

__all__ = ["MujocoWarning", "route_mujoco_warnings", "uses_mujoco"]

_seen: set[str] = set()
_installed = False


class MujocoWarning(UserWarning):
    """A warning raised by the MuJoCo C library (model compiler or simulator)."""


def _forward(message: str) -> None:
    text = str(message).strip()
    if text in _seen:
        return
    _seen.add(text)
    warnings.warn(f"MuJoCo: {text}", MujocoWarning, stacklevel=2)


def route_mujoco_warnings() -> bool:
    """Install the once-per-message handler (idempotent). Returns False when mujoco is not installed."""
    global _installed
    if _installed:
        return True
    try:
        import mujoco
    except ImportError:
        return False
    mujoco.set_mju_user_warning(_forward)
    _installed = True
    return True


def uses_mujoco(entry_point: object) -> bool:
    """Whether a gymnasium entry point (string or callable) builds a MuJoCo model."""
    if entry_point is None:
        return False
    text = entry_point if isinstance(entry_point, str) else f"{getattr(entry_point, '__module__', '')}"
    return "mujoco" in text.lower() or "mjwarp" in text.lower()
