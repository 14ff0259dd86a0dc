"""Partition keys of ``sms.raw.v1`` (``smsflow.keys``): every copy of one conversation, however a carrier
spells its numbers, gets one key and so lands on one partition, where one ingest task reassembles and
de-duplicates it (ARCHITECTURE.md, "Key by conversation")."""

from __future__ import annotations

import pytest

from smsflow.delivery.redelivery import key_partition
from smsflow.keys import address_key, conversation_key
from smsflow.smpp.address import Address

UNKNOWN, INTERNATIONAL, NATIONAL, ALPHANUMERIC = 0, 1, 2, 5

# One SMS from a CN mobile to an HK mobile, as three carriers write its addresses: (source, dest, region).
SPELLINGS = [
    (Address(INTERNATIONAL, 1, "8613812345678"), Address(INTERNATIONAL, 1, "85261234567"), "HK"),
    (Address(NATIONAL, 1, "13812345678"), Address(UNKNOWN, 0, "0085261234567"), "CN"),
    (Address(UNKNOWN, 0, "+86 138 1234 5678"), Address(UNKNOWN, 0, "+852-6123-4567"), None),
]


def test_one_conversation_spelt_three_ways_has_one_key_destination_first() -> None:
    keys = {conversation_key(src, dst, region) for src, dst, region in SPELLINGS}
    assert keys == {"85261234567|8613812345678"}


@pytest.mark.parametrize("partitions", [1, 3, 6, 12, 64])
def test_so_every_copy_lands_on_one_partition(partitions: int) -> None:
    assert (
        len(
            {
                key_partition(conversation_key(src, dst, region).encode(), partitions)
                for src, dst, region in SPELLINGS
            }
        )
        == 1
    )


def test_the_direction_is_part_of_the_key() -> None:
    a, b = Address(INTERNATIONAL, 1, "85261234567"), Address(INTERNATIONAL, 1, "85291234567")
    assert conversation_key(a, b, None) != conversation_key(b, a, None)


def test_a_national_number_is_normalised_with_the_carriers_region() -> None:
    national = Address(UNKNOWN, 0, "13812345678")
    assert address_key(national, "CN") == "8613812345678"
    # without a region the number cannot be placed: its digits are the key, not a guessed country
    assert address_key(national, None) == "13812345678"


@pytest.mark.parametrize(
    ("addr", "key"),
    [
        (Address(ALPHANUMERIC, 0, "HSBC"), "HSBC"),
        (Address(ALPHANUMERIC, 0, " hsbc "), "HSBC"),  # spelt differently by another carrier
        (Address(UNKNOWN, 0, "10690000"), "10690000"),  # a CN service code is never E.164
        (Address(UNKNOWN, 0, "95588"), "95588"),
    ],
)
def test_what_is_not_a_phone_number_keys_by_its_text(addr: Address, key: str) -> None:
    assert address_key(addr, "CN") == key
