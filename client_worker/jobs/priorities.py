"""The Redis lists kombu keeps for one queue: one per priority step.

kombu's Redis transport stores a message of priority p in the list of the highest step ≤ p,
named `<queue>` for step 0 and `<queue><sep><step>` otherwise, and its consumer pops the lists in
step order, so step 0 is served first (docs/facts.md, "Celery messages on Redis"). The steps and
the separator are the producers' `broker_transport_options` (`PRIORITY_STEPS`,
`PRIORITY_SEPARATOR`); a list the worker does not know of is a list nobody ever reads, so the
worker looks at the lists a producer with other options would write (`unread`) and reports any
that hold messages (`Stranded`).

They are reported, not consumed: the steps and the separator are a contract with the producers
and with the autoscaler, which counts the configured lists, so one setting fixes the priority
order, the scaling and the stranded messages together, where consuming them would leave the
autoscaler blind to that work (docs/runbook.md, "Stranded messages").
"""

from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass

from redis.asyncio import Redis

from client_worker.config import Settings

KNOWN_SEPARATORS = ("\x06\x16", ":")
"""kombu's default separator and the `:` of Celery's documentation on Redis priorities."""
KOMBU_STEPS = range(1, 10)
"""Every step a producer can name: kombu clamps priorities to 0–9, step 0 is the plain list."""
EVERY_STEP = [0, *KOMBU_STEPS]
"""The steps whose lists are every list kombu can write for a queue, whatever the producers'
`priority_steps`: a priority p goes to the list of one of their steps ≤ p, and each of 0–9 is a
step here. What the advice proposes, as the lists seen so far do not tell the producers' steps."""


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

    def unread(self, queue: str) -> dict[str, tuple[str, int]]:
        """The lists of ``queue`` that producers with other steps or a known other separator write
        and this worker never reads: name -> (separator, step)."""
        read = set(self.of(queue))
        return {f"{queue}{separator}{step}": (separator, step)
                for separator in dict.fromkeys([self.separator, *KNOWN_SEPARATORS]) for step in KOMBU_STEPS
                if f"{queue}{separator}{step}" not in read}


@dataclass(frozen=True)
class Stranded:
    """Messages waiting in lists this worker does not read, and the settings that would read them.

    The steps proposed are `EVERY_STEP`, not the steps of the lists that hold messages now: a
    producer with steps 0–9 whose messages so far had the priorities 0, 1, 2, 3, 5, 6, 7 and 9 writes
    4 and 8 to lists of their own later, which a worker set to the steps seen would strand next."""

    lists: dict[str, int]
    separators: list[str]
    steps: list[int]

    @classmethod
    def found(cls, lists: PriorityLists, unread: dict[str, tuple[str, int]], lengths: list[int]) -> Stranded:
        """From the lengths of the `unread` lists, in their order: which hold messages, and what to set."""
        full = {name: length for name, length in zip(unread, lengths) if length}
        separators = sorted({unread[name][0] for name in full})
        return cls(full, separators, list(EVERY_STEP))

    def shown(self) -> dict[str, int]:
        """The lists and their counts in name order, the names `printable`."""
        return {printable(name): count for name, count in sorted(self.lists.items())}

    def advice(self, settings: Settings) -> str:
        """What an operator reads: the lists, their counts and the setting to change."""
        shown = ", ".join(f"{name} ({count})" for name, count in self.shown().items())
        wanted = [f"PRIORITY_STEPS={','.join(map(str, self.steps))}"]
        if self.separators != [settings.priority_separator]:
            wanted.append(f"PRIORITY_SEPARATOR={' or '.join(printable(sep) for sep in self.separators)}")
        return (f"messages wait in priority lists this worker does not read: {shown}; the producers' "
                f"broker_transport_options differ from PRIORITY_STEPS={','.join(map(str, settings.priority_steps))} "
                f"PRIORITY_SEPARATOR={printable(settings.priority_separator)}: set {' and '.join(wanted)}, "
                "which reads every list kombu can write for priorities 0-9 (or exactly the producers' "
                "priority_steps, if you know them), and the autoscaler's prioritySteps to the same")


async def stranded_messages(redis: Redis, lists: PriorityLists, queue: str) -> Stranded:
    """Read the lengths of every list of ``queue`` that ``lists`` does not read (one round trip)."""
    unread = lists.unread(queue)
    async with redis.pipeline(transaction=False) as pipe:
        for name in unread:
            pipe.llen(name)
        lengths = await pipe.execute()
    return Stranded.found(lists, unread, lengths)


def printable(name: str) -> str:
    r"""A list name as the environment and logs write it: control characters as `\x06`."""
    return name.encode("unicode_escape").decode("ascii")
