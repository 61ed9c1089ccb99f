"""The test harness itself: ports it hands out stay free for the process they are meant for."""

from __future__ import annotations

import socket

from harness.devstack import free_port


def _ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def test_free_ports_are_outside_the_range_outgoing_connections_use() -> None:
    # A port from the ephemeral range can be taken by any outgoing connection before the
    # worker binds it; CI once lost two tests to exactly that.
    low = _ephemeral_low()
    tcp = [free_port() for _ in range(200)]
    udp = [free_port(socket.SOCK_DGRAM) for _ in range(50)]
    assert all(p < low for p in tcp + udp)
    assert len(set(tcp)) == len(tcp) and len(set(udp)) == len(udp)


def test_a_port_held_by_a_listener_is_never_handed_out() -> None:
    held = []
    try:
        for _ in range(20):
            s = socket.socket()
            s.bind(("0.0.0.0", free_port()))
            s.listen()
            held.append(s)
        ports = {s.getsockname()[1] for s in held}
        for _ in range(500):
            p = free_port()
            assert p not in ports
            with socket.socket() as s:
                s.bind(("0.0.0.0", p))  # raises if it were taken
    finally:
        for s in held:
            s.close()


def test_question_set_scoring_counts_words_not_style() -> None:
    from harness.scoring import edit_distance, normalize_words

    assert normalize_words("What's 7 plus 15? Grey-blue colour.") == \
        ["what's", "seven", "plus", "fifteen", "gray", "blue", "color"]
    ref = normalize_words("How many legs does a spider have?")
    assert edit_distance(ref, normalize_words("how many legs does a spider have")) == 0
    assert edit_distance(ref, normalize_words("How many legs done aside to have?")) == 3
    assert edit_distance(ref, []) == len(ref)


def test_question_set_scoring_reads_expect_trees() -> None:
    from harness.scoring import matches

    either = {"any": ["12", "twelve"]}
    assert matches(either, "Seven plus five is 12.") and matches(either, "That makes twelve.")
    assert not matches(either, "It is eleven.")
    both = {"all": [{"any": ["cairo"]}, {"any": ["4", "four"]}]}
    assert matches(both, "The capital of Egypt is Cairo, and two plus two is 4.")
    assert not matches(both, "The capital of Egypt is Cairo.")
    assert matches(None, "anything at all")
