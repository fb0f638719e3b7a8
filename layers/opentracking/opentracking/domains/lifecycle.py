"""Deleting a domain and everything kept for it. A module of its own: the cascade reaches webhooks,
privacy settings and suppressions, which themselves read domains, so `domains` cannot import them."""

from __future__ import annotations

from opentracking.core.config import table_name
from opentracking.delivery import suppression_lists
from opentracking.domains import identity, registry, tracking_hosts
from opentracking.privacy import policy, suppressions
from opentracking.storage import keys, store
from opentracking.webhooks import subscriptions


def delete(name: str) -> None:
    """Delete a domain, its webhooks, privacy settings, tracking suppression list and Mailgun's suppression
    lists (a domain created again later starts clean)."""
    domain = registry.get(name)
    # AWS resources first: if this fails part-way, the domain is still there and the delete can be repeated.
    tracking_hosts.release(domain.host, domain.tracking_host)
    tracking_hosts.release_retired(domain=name)  # hosts of earlier web prefixes, kept for old pixels
    identity.release(name, domain.identity)
    subscriptions.delete_all(name)
    policy.delete(name)
    suppressions.delete_all(name)
    suppression_lists.delete_domain(name)
    store.delete_item(table_name(), keys.domain_key(name))
