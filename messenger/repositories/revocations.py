"""Token revocations: stored by the admin API, checked on every REST call and CONNECT."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from acl.principal import Principal
from acl.revocation import Revocation
from messenger.models import TokenRevocation


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
    """True if a stored revocation covers the token of ``principal`` (one indexed query).

    Mirrors :meth:`acl.revocation.Revocation.covers`: the token's ``jti`` is revoked, or a
    cut-off for its user is later than its ``iat`` (or the token has no ``iat``).
    """
    user_cutoff = TokenRevocation.user_id == principal.user_id
    if principal.issued_at is not None:
        user_cutoff = and_(user_cutoff, TokenRevocation.issued_before > principal.issued_at)
    matches = user_cutoff if principal.jti is None else or_(TokenRevocation.jti == principal.jti, user_cutoff)
    return session.scalar(select(TokenRevocation.id).where(matches).limit(1)) is not None
