"""Clients of the two services that exist outside this project: member lists and billing.

Each has a small interface (:class:`~messenger.services.lists.ListService`,
:class:`~messenger.services.billing.Billing`) and two implementations chosen by the settings:
an HTTP client of the real service (``MESSENGER_LISTS_URL``, ``MESSENGER_BILLING_URL``), and an
embedded one kept in the project's database for ``messenger serve``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from messenger.services.billing import Billing, HttpBilling, LedgerBilling
from messenger.services.http import HttpService
from messenger.services.lists import EmbeddedLists, HttpLists, ListService
from messenger.settings import ProductSettings

__all__ = ["Services", "create_services"]


@dataclass(frozen=True, slots=True)
class Services:
    lists: ListService
    billing: Billing

    @property
    def lists_embedded(self) -> bool:
        """True when lists live in this project's database (managed through ``/v1/lists``)."""
        return isinstance(self.lists, EmbeddedLists)

    def close(self) -> None:
        for client in (self.lists, self.billing):
            close = getattr(client, "close", None)
            if close is not None:
                close()


def create_services(settings: ProductSettings, sessions: sessionmaker[Session]) -> Services:
    """HTTP clients where a URL is configured, embedded implementations otherwise."""
    token = settings.services_token.get_secret_value() if settings.services_token else None

    def http(name: str, url: str) -> HttpService:
        return HttpService(
            name,
            url,
            timeout_s=settings.services_timeout_s,
            retries=settings.services_retries,
            token=token,
        )

    lists: ListService = (
        HttpLists(http("lists", settings.lists_url)) if settings.lists_url else EmbeddedLists(sessions)
    )
    billing: Billing = (
        HttpBilling(http("billing", settings.billing_url))
        if settings.billing_url
        else LedgerBilling(sessions)
    )
    return Services(lists, billing)
