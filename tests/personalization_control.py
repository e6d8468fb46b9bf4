"""Asking the personalization workers, on `personalization.model.control`, which version they serve, or to serve
another (every worker hears it: no queue group)."""

from __future__ import annotations

import asyncio

import nats

from shared import subjects
from shared.messages import Codec
from shared.personalization_messages import (
    PersonalizationControlAnswer,
    PersonalizationModelControl,
    PersonalizationModelState,
)


def control_personalization(url: str, workers: int, version: str = "") -> list[PersonalizationModelState]:
    """The states of `workers` workers after each loaded `version` (an empty version only asks)."""

    async def ask() -> list[PersonalizationModelState]:
        codec = Codec()
        nc = await nats.connect(url)
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish(
                subjects.PERSONALIZATION_MODEL_CONTROL,
                codec.encode(PersonalizationModelControl(version=version)),
                reply=inbox,
            )
            states = []
            decoder = codec.decoder(PersonalizationControlAnswer)
            for _ in range(workers):
                state = decoder.decode((await sub.next_msg(timeout=15)).data)
                assert isinstance(state, PersonalizationModelState), state
                states.append(state)
            return states
        finally:
            await nc.close()

    return asyncio.run(ask())
