"""The world's parameters as command-line options, shared by `fraudmesh simulate` and `fraudmesh train`: the
fraud mix, the label delays and the camouflage are all settable, with the defaults of `WorldParams`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from feature_svc.world.model import WorldParams

# option -> (WorldParams field, help); the sizes and the seed are added by each command itself
TUNABLE: dict[str, tuple[str, str]] = {
    "--ring-share": ("ring_share", "share of transactions in fraud rings"),
    "--card-testing-share": ("card_testing_share", "share in card-testing bursts"),
    "--ato-share": ("ato_share", "share in account takeovers"),
    "--stolen-card-share": ("stolen_card_share", "share in stolen-card runs"),
    "--ring-camouflage": ("ring_camouflage", "share of ring purchases that copy the card's own habits"),
    "--compromised-device-share": ("compromised_device_share", "share of ring devices that are legit users' own"),
    "--public-ip-share": ("public_ip_share", "share of fraud IPs that are public (shared with strangers)"),
    "--new-device-rate": ("new_device_rate", "share of cards whose holder starts using a new device"),
    "--never-labelled-share": ("never_labelled_share", "share of fraud whose chargeback never arrives"),
}


def add_world_arguments(p: argparse.ArgumentParser) -> None:
    """The fraud mix, camouflage and label delays (see WorldParams for what each one means)."""
    d = WorldParams()
    g = p.add_argument_group("world (fraud mix, camouflage, label delays)")
    for option, (name, text) in TUNABLE.items():
        g.add_argument(option, type=float, default=getattr(d, name), help=f"{text} (default {getattr(d, name)})")
    lo, hi = d.label_delay_days
    g.add_argument(
        "--label-delay-days",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=[lo, hi],
        help=f"chargeback delay range in days (default {lo:g} {hi:g})",
    )


def world_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The WorldParams keyword arguments set by `add_world_arguments` (absent options keep their defaults)."""
    known = {f.name for f in fields(WorldParams)}
    out: dict[str, Any] = {}
    for _option, (name, _text) in TUNABLE.items():
        if name in known and getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    delays = getattr(args, "label_delay_days", None)
    if delays is not None:
        out["label_delay_days"] = (float(delays[0]), float(delays[1]))
    return out
