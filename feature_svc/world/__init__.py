"""A seeded, reproducible payment world: cards and their customers, merchants, devices, IPs, and weeks of
transactions with four kinds of labelled fraud whose labels arrive late, as chargebacks do.

    from feature_svc.world import WorldParams, generate_world, write_world
    world = generate_world(WorldParams(n_cards=20_000, n_transactions=200_000, seed=7))
    print(world.summary())
    write_world(world, "var/world")
"""

from feature_svc.world.generate import generate_world
from feature_svc.world.io import read_world, write_world
from feature_svc.world.model import FRAUD_KINDS, NEVER_LABELLED_DAYS, FraudKind, World, WorldError, WorldParams

__all__ = [
    "FRAUD_KINDS",
    "NEVER_LABELLED_DAYS",
    "FraudKind",
    "World",
    "WorldError",
    "WorldParams",
    "generate_world",
    "read_world",
    "write_world",
]
