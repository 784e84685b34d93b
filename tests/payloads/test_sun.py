"""SUN message verification (NTAG 424 DNA, AES mode) against AN12196 and a simulated tag."""

from __future__ import annotations

import os
import pickle
import random

import pytest

from campaigns.payloads.keys import SunKeys
from campaigns.payloads.sun import SunResult, verify_sun
from tests.fixtures.ntag424 import Ntag424, aes_cmac

AN12196_UID = bytes.fromhex("04DE5F1EACC040")
AN12196_E = "EF963FF7828658A599F3041510671E88"
AN12196_C = "94EED9EE65337086"
ZERO_KEYS = SunKeys(meta_read=bytes(16), file_read=bytes(16))


def keys_of(tag: Ntag424) -> SunKeys:
    return SunKeys(meta_read=tag.meta_read_key, file_read=tag.file_read_key)


def test_the_simulator_cmac_matches_rfc_4493() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    assert aes_cmac(key, b"").hex() == "bb1d6929e95937287fa37d129b756746"
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_cmac(key, message).hex() == "070a16b46b4d4144f79bdd9dd04a287c"
    message = bytes.fromhex(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411"
    )
    assert aes_cmac(key, message).hex() == "dfa66747de9ae63030ca32611497c827"


def test_the_simulator_reproduces_the_an12196_mac() -> None:
    tag = Ntag424(uid=AN12196_UID, meta_read_key=bytes(16), file_read_key=bytes(16))
    assert tag.sdm_mac(61) == AN12196_C


@pytest.mark.parametrize(
    ("e", "c"),
    [
        (AN12196_E, AN12196_C),
        (AN12196_E.lower(), AN12196_C.lower()),
        (AN12196_E, "94eeD9EE65337086"),
    ],
)
def test_an12196_known_answer(e: str, c: str) -> None:
    assert verify_sun(e, c, uid=AN12196_UID, keys=ZERO_KEYS) == SunResult(
        "valid_mac", uid=AN12196_UID, counter=61
    )


def test_simulated_taps_with_random_keys_and_increasing_counters() -> None:
    for _ in range(5):
        tag = Ntag424.random()
        for expected_counter in range(1, 6):
            e, c = tag.tap()
            result = verify_sun(e, c, uid=tag.uid, keys=keys_of(tag))
            assert result == SunResult("valid_mac", uid=tag.uid, counter=expected_counter)


@pytest.mark.parametrize("counter", [0, 1, 255, 256, 65_536, 0xFFFFFF])
def test_counter_is_read_least_significant_byte_first(counter: int) -> None:
    tag = Ntag424.random()
    e, c = tag.message(counter)
    assert verify_sun(e, c, uid=tag.uid, keys=keys_of(tag)).counter == counter


def _flip(hex_text: str, bit: int) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[bit // 8] ^= 1 << (bit % 8)
    return raw.hex().upper()


def test_any_flipped_bit_in_e_is_invalid() -> None:
    tag = Ntag424.random()
    e, c = tag.tap()
    for bit in range(128):
        assert verify_sun(_flip(e, bit), c, uid=tag.uid, keys=keys_of(tag)).verdict == "invalid"


def test_any_flipped_bit_in_c_is_invalid() -> None:
    tag = Ntag424.random()
    e, c = tag.tap()
    for bit in range(64):
        assert verify_sun(e, _flip(c, bit), uid=tag.uid, keys=keys_of(tag)) == SunResult("invalid")


def test_an12196_message_for_another_uid_is_invalid() -> None:
    other_uid = bytes.fromhex("04DE5F1EACC041")
    assert verify_sun(AN12196_E, AN12196_C, uid=other_uid, keys=ZERO_KEYS) == SunResult("invalid")


def test_a_valid_message_of_another_uid_under_the_same_keys_is_invalid() -> None:
    """Keys shared by two tags (supplied keys): the MAC is right, the UID is not ours."""
    tag = Ntag424.random()
    twin = Ntag424(uid=b"\x04" + os.urandom(6), meta_read_key=tag.meta_read_key,
                   file_read_key=tag.file_read_key)  # fmt: skip
    e, c = twin.tap()
    assert verify_sun(e, c, uid=twin.uid, keys=keys_of(tag)).verdict == "valid_mac"
    assert verify_sun(e, c, uid=tag.uid, keys=keys_of(tag)) == SunResult("invalid")


def test_another_tags_message_is_invalid() -> None:
    tag, other = Ntag424.random(), Ntag424.random()
    e, c = other.tap()
    assert verify_sun(e, c, uid=tag.uid, keys=keys_of(tag)) == SunResult("invalid")


def test_e_and_c_of_two_different_taps_do_not_combine() -> None:
    tag = Ntag424.random()
    e1, _ = tag.tap()
    _, c2 = tag.tap()
    assert verify_sun(e1, c2, uid=tag.uid, keys=keys_of(tag)).verdict == "invalid"


@pytest.mark.parametrize("picc_data_tag", [0x00, 0x87, 0x47, 0xC6, 0xD7, 0xFF])
def test_a_picc_data_tag_other_than_c7_is_invalid(picc_data_tag: int) -> None:
    """The MAC is right for the UID and counter, but the tag byte does not describe a
    UID + counter mirror with a 7-byte UID."""
    tag = Ntag424.random()
    e = tag.picc_data(7, os.urandom(5), picc_data_tag=picc_data_tag)
    c = tag.sdm_mac(7)
    assert verify_sun(e, c, uid=tag.uid, keys=keys_of(tag)) == SunResult("invalid")


def _malformed(e: str, c: str) -> list[tuple[str | None, str | None]]:
    return [
        (None, c),
        (e, None),
        (None, None),
        ("", c),
        (e, ""),
        (e[:-1], c),
        (e, c[:-1]),
        (e[:-2], c),
        (e + "0", c),
        (e, c + "00"),
        (e[:-1] + "G", c),
        (e, "Z" + c[1:]),
        (" " + e[1:], c),
        (e[:16] + " " + e[17:], c),
        (e, c[:8] + "\n" + c[9:]),
        (e + "\n", c),
        ("0x" + e[2:], c),
        (e, "-" + c[1:]),
        (e[:-1] + "٣", c),  # an Arabic-Indic digit: str.isdigit() but not hex
        ("é" + e[1:], c),
        (e + c, ""),
        ("\x00" * 32, c),
    ]


def test_malformed_truncated_or_missing_parameters_are_invalid() -> None:
    tag = Ntag424.random()
    e, c = tag.tap()
    assert verify_sun(e, c, uid=tag.uid, keys=keys_of(tag)).verdict == "valid_mac"
    for bad_e, bad_c in _malformed(e, c):
        result = verify_sun(bad_e, bad_c, uid=tag.uid, keys=keys_of(tag))
        assert result == SunResult("invalid"), (bad_e, bad_c)


def test_random_garbage_never_raises() -> None:
    rng = random.Random(424)
    alphabet = "0123456789abcdefABCDEFxyz %&=\x00é"
    tag = Ntag424.random()
    for _ in range(500):
        e = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 16, 31, 32, 33])))
        c = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 15, 16, 17])))
        assert verify_sun(e, c, uid=tag.uid, keys=keys_of(tag)).verdict == "invalid"


def test_key_state_is_kept_with_the_keys_and_never_shows_them() -> None:
    tag = Ntag424.random()
    keys = SunKeys(meta_read=tag.meta_read_key, file_read=tag.file_read_key)
    for _ in range(3):  # the same state verifies tap after tap
        e, c = tag.tap()
        assert verify_sun(e, c, uid=tag.uid, keys=keys).verdict == "valid_mac"
    state = keys.verifier_state
    assert state is not None
    for shown in (repr(keys), str(keys), repr(state), str(state)):
        assert tag.meta_read_key.hex() not in shown.lower()
        assert tag.file_read_key.hex() not in shown.lower()
        assert "redacted" in shown
    # Equal keys are equal whatever state they hold; a copy drops the state.
    assert keys == SunKeys(meta_read=tag.meta_read_key, file_read=tag.file_read_key)
    copied = pickle.loads(pickle.dumps(keys))  # noqa: S301 - our own bytes
    assert copied == keys
    assert copied.verifier_state is None
    e, c = tag.tap()
    assert verify_sun(e, c, uid=tag.uid, keys=copied).verdict == "valid_mac"
