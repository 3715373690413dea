"""What a decision tells the people watching: Kubernetes Events, one per transition."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Event:
    type: str
    """``Normal`` or ``Warning``."""
    reason: str
    message: str
