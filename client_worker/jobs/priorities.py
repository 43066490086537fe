"""The Redis lists kombu keeps for one queue: one per priority step.

kombu's Redis transport stores a message of priority p in the list of the highest step ≤ p,
named `<queue>` for step 0 and `<queue><sep><step>` otherwise, and its consumer pops the lists in
step order, so step 0 is served first (docs/facts.md, "Celery messages on Redis"). The steps and
the separator are the producers' `broker_transport_options` (`PRIORITY_STEPS`,
`PRIORITY_SEPARATOR`); a list the worker does not know of is a list nobody ever reads.
"""

from __future__ import annotations

from bisect import bisect

from client_worker.config import Settings


class PriorityLists:
    """List names for queues under one set of priority steps and one separator."""

    def __init__(self, steps: list[int], separator: str) -> None:
        self.steps = steps
        self.separator = separator

    @classmethod
    def from_settings(cls, settings: Settings) -> PriorityLists:
        return cls(settings.priority_steps, settings.priority_separator)

    def of(self, queue: str) -> list[str]:
        """Every list of ``queue``, in the order kombu consumes them (step 0, the plain list, first)."""
        return [self._name(queue, step) for step in self.steps]

    def for_priority(self, queue: str, priority: int) -> str:
        """The list kombu pushes a message of ``priority`` onto."""
        return self._name(queue, self.steps[max(0, bisect(self.steps, priority) - 1)])

    def _name(self, queue: str, step: int) -> str:
        return queue if step == 0 else f"{queue}{self.separator}{step}"
