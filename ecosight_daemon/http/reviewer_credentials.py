"""Who may write a review decision. Review writes need a credential even on loopback (a
decision can turn gun shots into background training clips): a reviewer's own token from
`[review] reviewers_file` (the decision is theirs, whatever the body says), or the daemon's
bearer token (an operator, deciding under the name the body gives)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from ecosight_daemon.errors import ConfigError
from ecosight_daemon.util.secret_file import checked_secret, read_secret_text

MAX_REVIEWERS = 1000


@dataclass(frozen=True)
class Refused:
    status: int
    error: str


class ReviewerCredentials:
    def __init__(self, daemon_token: str | None, reviewer_tokens: dict[str, str]) -> None:
        self._daemon_token = daemon_token
        self._reviewers = list(reviewer_tokens.items())  # (token, name)

    @property
    def configured(self) -> bool:
        return self._daemon_token is not None or bool(self._reviewers)

    def reviewer(self, authorization: str, claimed: str | None, fallback: str) -> str | Refused:
        """The reviewer this request decides as, or why it is refused."""
        if not self.configured:
            return Refused(401, "review decisions need a credential, even on this machine: give each reviewer a "
                                "token in [review] reviewers_file, or set [http] token_file (docs/review.md)")
        given = authorization.removeprefix("Bearer ").encode() if authorization.startswith("Bearer ") else b""
        owner = None
        for token, name in self._reviewers:  # every token compared: the time says nothing about which matched
            if hmac.compare_digest(given, token.encode()):
                owner = name
        operator = self._daemon_token is not None and hmac.compare_digest(given, self._daemon_token.encode())
        if owner is not None:
            if claimed is not None and claimed != owner:
                return Refused(403, f"this token is {owner}'s; decide as {owner} (the reviewer field says "
                                    f"{claimed[:64]!r})")
            return owner
        if operator:
            return claimed if claimed is not None else fallback
        return Refused(401, "a valid reviewer token (or the daemon's token) is required: Authorization: Bearer ...")


def read_reviewer_tokens(path: Path) -> dict[str, str]:
    """`[review] reviewers_file`: one `name token` per line (# comments); token -> name."""
    setting = "review.reviewers_file"
    tokens: dict[str, str] = {}
    for number, line in enumerate(read_secret_text(path, setting).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isprintable() or len(parts[0]) > 64:
            raise ConfigError(f"{setting} {path} line {number}: write `name token` (a name of at most 64 "
                              "characters, one space, a token of at least 16)")
        name, token = parts
        checked_secret(token, f"{setting} {path} line {number}")
        if token in tokens:
            raise ConfigError(f"{setting} {path} line {number}: {name} has the same token as {tokens[token]}; "
                              "give each reviewer their own")
        tokens[token] = name
    if len(tokens) > MAX_REVIEWERS:
        raise ConfigError(f"{setting} {path} lists {len(tokens)} reviewers; at most {MAX_REVIEWERS}")
    return tokens
