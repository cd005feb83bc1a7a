"""Generated container names in Docker's style (`adjective_surname`), unique among existing names."""

from __future__ import annotations

import secrets
from collections.abc import Container

ADJECTIVES = (
    "admiring", "agitated", "amazing", "bold", "brave", "busy", "clever", "cool", "dazzling", "eager",
    "elated", "epic", "fervent", "focused", "gallant", "gifted", "happy", "hopeful", "jolly", "keen",
    "kind", "loving", "lucid", "modest", "nifty", "nostalgic", "optimistic", "peaceful", "quirky",
    "relaxed", "serene", "sharp", "stoic", "tender", "trusting", "upbeat", "vibrant", "wizardly", "zen",
)  # fmt: skip
SURNAMES = (
    "albattani", "babbage", "bohr", "curie", "darwin", "einstein", "euclid", "fermat", "feynman",
    "galileo", "goodall", "hopper", "hypatia", "johnson", "kepler", "lamarr", "lovelace", "meitner",
    "newton", "noether", "pascal", "ritchie", "sammet", "shannon", "tesla", "thompson", "torvalds",
    "turing", "wozniak", "yalow",
)  # fmt: skip


def generate(taken: Container[str]) -> str:
    for attempt in range(100):
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
        if attempt > 10:
            name += str(secrets.randbelow(100))
        if name not in taken:
            return name
    return "ctr_" + secrets.token_hex(6)
