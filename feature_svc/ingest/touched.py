"""Which entities' features an ingested batch changes.

Directly (`of_transactions`, `of_labels`): the card, merchant, device and IP of each new transaction; the card
and merchant of each new label. Through the graph (`graph_neighbours`): a fraud label also changes the
fraud-labelled-card counts of the devices and IPs its card used and the 2-hop fraud count of the cards on them;
a new transaction changes the sharing counts and component sizes of the other cards on its device and IP.
Those second-hand effects are the lagging class of the registry (see `FRESHNESS` in feature_svc/definitions.py):
they are refreshed by the deferred pass, at most `MAX_NEIGHBOURS` cards per device or IP, so a hub (a carrier
NAT address with thousands of cards) costs no more than that; beyond it the scoring path's max age applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from feature_svc.compute import Entity
from feature_svc.graph import GraphStore
from feature_svc.ingest.ledger_writer import LabelRow
from shared.ingest_messages import TxnIngest

MAX_NEIGHBOURS = 200


def of_transactions(txns: Iterable[TxnIngest]) -> list[Entity]:
    out: dict[Entity, None] = {}
    for t in txns:
        out[("card", t.card_id)] = None
        if t.merchant_id:
            out[("merchant", t.merchant_id)] = None
        if t.device_id:
            out[("device", t.device_id)] = None
        if t.ip_address:
            out[("ip", t.ip_address)] = None
    return list(out)


def of_labels(rows: Iterable[LabelRow]) -> list[Entity]:
    out: dict[Entity, None] = {}
    for r in rows:
        out[("card", r.card_id)] = None
        if r.merchant_id:
            out[("merchant", r.merchant_id)] = None
    return list(out)


async def graph_neighbours(graph: GraphStore, cards: Sequence[str]) -> list[Entity]:
    """The devices and IPs these cards used, and the other cards on those (at most MAX_NEIGHBOURS per node)."""
    out: dict[Entity, None] = {}
    for card in dict.fromkeys(cards):
        for n in await graph.neighbours("card", card):
            if n.entity_type not in ("device", "ip"):
                continue
            out[(n.entity_type, n.entity_id)] = None
            others = await graph.neighbours(n.entity_type, n.entity_id)
            for o in others[:MAX_NEIGHBOURS]:
                if o.entity_id != card:
                    out[("card", o.entity_id)] = None
    return list(out)


def devices_and_ips(txns: Iterable[TxnIngest]) -> list[Entity]:
    out: dict[Entity, None] = {}
    for t in txns:
        if t.device_id:
            out[("device", t.device_id)] = None
        if t.ip_address:
            out[("ip", t.ip_address)] = None
    return list(out)


async def cards_on(graph: GraphStore, nodes: Sequence[Entity], exclude: set[str]) -> list[Entity]:
    """The cards linked to these devices and IPs (at most MAX_NEIGHBOURS each), except `exclude`: one query on
    a store that offers `cards_linked` (PostgreSQL), one lookup per node otherwise."""
    out: dict[Entity, None] = {}
    if isinstance(graph, LinkedCards):
        cards = await graph.cards_linked(nodes, MAX_NEIGHBOURS)
    else:
        cards = [o.entity_id for etype, eid in nodes for o in (await graph.neighbours(etype, eid))[:MAX_NEIGHBOURS]]
    for card in cards:
        if card not in exclude:
            out[("card", card)] = None
    return list(out)


@runtime_checkable
class LinkedCards(Protocol):
    async def cards_linked(self, nodes: Sequence[tuple[str, str]], limit: int) -> list[str]:
        """The cards linked to any of `nodes`, at most `limit` per node (the first by card id)."""
        ...
