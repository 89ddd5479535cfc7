"""The dispatcher's exception tree.

DispatchError
├── SettingsError          a DISPATCH_* setting is missing or malformed (names the variable)
├── CampaignFileError      the campaign file is unreadable or invalid (carries every Problem)
├── TemplateProblemError   the letter template does not render (line and reason)
├── CampaignConflict       loading would change a campaign that is already scheduled or sent
├── NotFound               no campaign / delivery by that name or id
└── TransitionError        a delivery state change that the state machine forbids
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with the input, precise enough to fix without guessing."""

    file: str
    where: str  # e.g. "to[0] (Xi Jinping)"
    message: str
    field: str = ""  # e.g. "fax[1]"
    suggestion: str | None = None
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return self._text(self.file, self.where, self.field)

    def brief(self) -> str:
        """Without the file: what the ledger keeps beside a skipped route ("fax[1]: ... (did you mean ...?)")."""
        return self._text(self.field)

    def _text(self, *place: str) -> str:
        text = ": ".join([*(p for p in place if p), self.message])
        if self.suggestion:
            text += f" (did you mean {self.suggestion}?)"
        return text


class DispatchError(Exception):
    """Base of every dispatcher error."""


class SettingsError(DispatchError):
    pass


class CampaignFileError(DispatchError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TemplateProblemError(DispatchError):
    def __init__(self, message: str, *, line: int | None = None, template: str = "") -> None:
        self.line = line
        self.template = template
        where = f"{template}:{line}" if line is not None else template
        super().__init__(f"{where}: {message}" if where else message)


class CampaignConflict(DispatchError):
    pass


class NotFound(DispatchError):
    pass


class TransitionError(DispatchError):
    pass
