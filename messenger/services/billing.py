"""The billing service: charge a payer for a payee, idempotently.

The HTTP contract assumed of the real service is in ``docs/services.md``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import unit_of_work
from messenger.exceptions import ServiceUnavailable, StoreUnavailable
from messenger.repositories import ledger
from messenger.services.http import HttpService

logger = logging.getLogger(__name__)


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # final: the payer must act (funds, card); ``reason`` says why
    UNKNOWN = "unknown"  # no usable answer: retry later with the same idempotency key


@dataclass(frozen=True, slots=True)
class Charge:
    payer: str
    payee: str
    amount: int  # minor units
    currency: str
    idempotency_key: str
    description: str


@dataclass(frozen=True, slots=True)
class ChargeResult:
    status: ChargeStatus
    reason: str | None = None
    charge_id: str | None = None


class Billing(Protocol):
    def charge(self, charge: Charge) -> ChargeResult:
        """Charge once per idempotency key: a repeat returns the first outcome. Never raises
        for the service being away: that is :attr:`ChargeStatus.UNKNOWN`."""
        ...


class LedgerBilling:
    """A ledger of balances in the project's database: charges move minor units from payer to
    payee, or fail with ``insufficient_funds``. Each charge is its own transaction, as a
    call to a separate service would be."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def charge(self, charge: Charge) -> ChargeResult:
        last = "concurrent charges with the same key"
        for _ in range(3):
            try:
                with unit_of_work(self._sessions) as session:
                    status, reason, charge_id = ledger.charge(
                        session,
                        payer=charge.payer,
                        payee=charge.payee,
                        amount=charge.amount,
                        currency=charge.currency,
                        idempotency_key=charge.idempotency_key,
                        description=charge.description,
                    )
                return ChargeResult(ChargeStatus(status), reason, charge_id)
            except IntegrityError:
                continue  # a concurrent charge with the same key won; look again
            except StoreUnavailable as exc:
                # a deadlock between two charges (MariaDB) is one too: the next try goes through
                logger.warning("ledger unavailable for charge %s: %s", charge.idempotency_key, exc)
                last = "ledger unavailable"
                continue
        return ChargeResult(ChargeStatus.UNKNOWN, last)


class HttpBilling:
    """``POST /charges`` on the billing service, with the idempotency key in the body and in
    the ``Idempotency-Key`` header."""

    def __init__(self, http: HttpService) -> None:
        self._http = http

    def charge(self, charge: Charge) -> ChargeResult:
        try:
            response = self._http.request(
                "POST", "/charges", json=asdict(charge), headers={"Idempotency-Key": charge.idempotency_key}
            )
        except ServiceUnavailable as exc:
            return ChargeResult(ChargeStatus.UNKNOWN, exc.detail[:200])
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        status, reason, charge_id = data.get("status"), data.get("reason"), data.get("id")
        reason = reason[:200] if isinstance(reason, str) else None
        charge_id = charge_id[:128] if isinstance(charge_id, str) else None
        if response.status_code in (200, 201) and status == ChargeStatus.SUCCEEDED:
            return ChargeResult(ChargeStatus.SUCCEEDED, charge_id=charge_id)
        if status == ChargeStatus.FAILED or response.status_code == 402:
            return ChargeResult(ChargeStatus.FAILED, reason or "declined", charge_id)
        if 400 <= response.status_code < 500 and response.status_code not in (408, 409):
            # the service refused the request itself: no money moved
            return ChargeResult(
                ChargeStatus.FAILED, reason or f"refused by billing (HTTP {response.status_code})"
            )
        # 408, 409 (the same key still in progress) or an answer this client cannot read: it is
        # not known whether money moved, so the tip stays pending and is asked again, same key
        logger.warning(
            "billing answered HTTP %d %r for %s", response.status_code, data, charge.idempotency_key
        )
        return ChargeResult(ChargeStatus.UNKNOWN, f"unexpected answer HTTP {response.status_code}")

    def close(self) -> None:
        self._http.close()
