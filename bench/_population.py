"""A realistic contact list for ``bench.broadcast``, written in bulk with SQL.

Names from many languages (40% of contacts have a non-ASCII first or last name: accents,
Cyrillic, Greek, CJK, Arabic, so subjects need RFC 2047 encoding and bodies character
references), addresses over the big mailbox providers, 3% unsubscribed and 2% bounced (the
broadcast must skip them), a country and a city. Rows are made from a seeded random generator,
so the same ``count`` always gives the same list: the bench regenerates it to check what the
relay received instead of holding a million addresses.

Inserted through SQLAlchemy Core's ``executemany`` in chunks (what an import job would do),
not the repository's per-contact path: a million contacts load in seconds, not hours.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

__all__ = ["Person", "insert_people", "people"]

SEED = 19
CHUNK = 10_000
ASCII_FIRST = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Susan", "Richard", "Jessica", "Thomas", "Sarah", "Daniel", "Karen",
    "Oliver", "Emma", "Lucas", "Mia", "Noah", "Hannah", "Liam", "Sofia", "Ethan", "Grace",
    "Mohammed", "Aisha", "Kwame", "Priya", "Rahul", "Anna", "Pieter", "Giulia", "Marco", "Ines",
)  # fmt: skip
ASCII_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
    "Anderson", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark",
    "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams",
    "Rossi", "Bianchi", "Jansen", "De Vries", "Kowalski", "Novak", "Okafor", "Mensah", "Singh",
)  # fmt: skip
#: with the ASCII form their address uses (people rarely have non-ASCII mailbox names)
OTHER_FIRST = (
    ("Chloé", "chloe"), ("Jürgen", "juergen"), ("Søren", "soeren"), ("Zoë", "zoe"),
    ("François", "francois"), ("Björn", "bjoern"), ("Łukasz", "lukasz"), ("Ana María", "anamaria"),
    ("José", "jose"), ("Dmitrï", "dmitri"), ("Ioánna", "ioanna"), ("Ayşe", "ayse"),
    ("Дмитрий", "dmitry"), ("Анна", "anna"), ("Γιώργος", "giorgos"), ("Ελένη", "eleni"),
    ("美咲", "misaki"), ("翔太", "shota"), ("伟", "wei"), ("静", "jing"), ("민준", "minjun"),
    ("محمد", "mohamed"), ("فاطمة", "fatima"), ("Nguyễn Anh", "anh"), ("Đức", "duc"),
)  # fmt: skip
OTHER_LAST = (
    ("Müller", "mueller"), ("Šimůnek", "simunek"), ("Øvergård", "oevergaard"),
    ("García López", "garcia"), ("Lefèvre", "lefevre"), ("Wiśniewska", "wisniewska"),
    ("Иванов", "ivanov"), ("Παπαδόπουλος", "papadopoulos"), ("佐藤", "sato"), ("王", "wang"),
    ("김", "kim"), ("الحسن", "alhassan"), ("Öztürk", "ozturk"), ("Ngô", "ngo"),
)  # fmt: skip
DOMAINS = (
    "gmail.com", "gmail.com", "gmail.com", "gmail.com", "outlook.com", "hotmail.com",
    "yahoo.com", "icloud.com", "gmx.de", "web.de", "orange.fr", "libero.it", "mail.ru",
    "qq.com", "naver.com", "example.org",
)  # fmt: skip
COUNTRIES = (
    ("GB", "London"), ("US", "Denver"), ("DE", "München"), ("FR", "Lyon"), ("ES", "Sevilla"),
    ("JP", "東京"), ("RU", "Москва"), ("GR", "Αθήνα"), ("PL", "Kraków"), ("BR", "São Paulo"),
)  # fmt: skip
NON_ASCII_SHARE = 0.40
UNSUBSCRIBED_SHARE = 0.03
BOUNCED_SHARE = 0.02


@dataclass(frozen=True, slots=True)
class Person:
    number: int  # 1..count, also the contact id
    email: str
    first_name: str
    last_name: str
    status: str
    country: str
    city: str

    @property
    def eligible(self) -> bool:
        return self.status == "subscribed"


def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum())


def people(count: int) -> Iterator[Person]:
    """The ``count`` contacts, the same ones every time for the same count."""
    rng = random.Random(SEED)
    for n in range(1, count + 1):
        if rng.random() < NON_ASCII_SHARE:
            # at least one non-ASCII part; sometimes both
            first, first_addr = rng.choice(OTHER_FIRST)
            if rng.random() < 0.5:
                last, last_addr = rng.choice(OTHER_LAST)
            else:
                last = rng.choice(ASCII_LAST)
                last_addr = _ascii(last)
        else:
            first = rng.choice(ASCII_FIRST)
            last = rng.choice(ASCII_LAST)
            first_addr, last_addr = _ascii(first), _ascii(last)
        draw = rng.random()
        if draw < UNSUBSCRIBED_SHARE:
            status = "unsubscribed"
        elif draw < UNSUBSCRIBED_SHARE + BOUNCED_SHARE:
            status = "bounced"
        else:
            status = "subscribed"
        country, city = rng.choice(COUNTRIES)
        yield Person(
            number=n,
            # the number keeps addresses unique; real lists have as many shapes as people
            email=f"{first_addr}.{last_addr}.{n}@{rng.choice(DOMAINS)}",
            first_name=first,
            last_name=last,
            status=status,
            country=country,
            city=city,
        )


def insert_people(engine: Engine, count: int, *, tagged: int = 0, tag: str = "") -> int:
    """Insert the ``count`` contacts (ids 1..count); the first ``tagged`` subscribed ones get
    ``tag``. Returns how many are subscribed."""
    table = SQLModel.metadata.tables["contacts"]
    now = datetime.now(UTC)
    subscribed = 0
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        if rows:
            with engine.begin() as conn:
                conn.execute(sa.insert(table), rows)
            rows.clear()

    for person in people(count):
        tags: list[str] = []
        if person.eligible:
            subscribed += 1
            if subscribed <= tagged:
                tags = [tag]
        rows.append(
            {
                "id": person.number,
                "email": person.email,
                "fields": {
                    "first_name": person.first_name,
                    "last_name": person.last_name,
                    "country": person.country,
                    "city": person.city,
                },
                "tags": tags,
                "score": 0,
                "status": person.status,
                "consent_source": "bench",
                "consent_at": now,
                "stage": "subscriber",
                "created_at": now,
                "updated_at": now,
            }
        )
        if len(rows) >= CHUNK:
            flush()
    flush()
    if engine.dialect.name == "postgresql":  # ids were given: move the sequence past them
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('contacts', 'id'), "
                "(SELECT max(id) FROM contacts))"
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(
            "VACUUM ANALYZE contacts" if engine.dialect.name == "postgresql" else "ANALYZE"
        )
    return subscribed
