"""Token revocations: stored by the admin API, checked on every REST call and CONNECT."""

from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from acl.principal import Principal
from acl.revocation import Revocation
from messenger.models import TokenRevocation
from messenger.repositories import indexes


def add(session: Session, revocation: Revocation, *, by: str, reason: str | None = None) -> TokenRevocation:
    row = TokenRevocation(
        jti=revocation.jti,
        user_id=revocation.user_id,
        issued_before=revocation.issued_before,
        reason=reason,
        created_by=by,
    )
    session.add(row)
    session.flush()
    return row


def is_revoked(session: Session, principal: Principal) -> bool:
    """True if a stored revocation covers the token of ``principal``.

    Mirrors :meth:`acl.revocation.Revocation.covers`: the token's ``jti`` is revoked, or a
    cut-off for its user is later than its ``iat`` (or the token has no ``iat``). One statement
    of two EXISTS, each one lookup in its own index, however many revocations a user has (an
    OR of both in one WHERE let the optimizer scan the table).
    """
    cutoff = select(TokenRevocation.id).where(TokenRevocation.user_id == principal.user_id)
    if principal.issued_at is not None:
        cutoff = cutoff.where(TokenRevocation.issued_before > principal.issued_at)
    checks = [exists(indexes.force(cutoff, TokenRevocation, "ix_token_revocations_user_id"))]
    if principal.jti is not None:
        by_jti = select(TokenRevocation.id).where(TokenRevocation.jti == principal.jti)
        checks.append(exists(indexes.force(by_jti, TokenRevocation, "ix_token_revocations_jti")))
    return bool(session.scalar(select(or_(*checks))))
