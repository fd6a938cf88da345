"""Ctrl-C during fit is held for a batch end, never dropped (vit_flowers.interrupt)."""

from __future__ import annotations

import os
import signal

import pytest

from vit_flowers.interrupt import deferred_interrupt, raise_if_interrupted


def press_ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_the_first_ctrl_c_waits_for_the_batch_end():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            press_ctrl_c()
            reached.append("after the signal")  # the batch goes on
            raise_if_interrupted()
            reached.append("after the check")
    assert reached == ["after the signal"]
    raise_if_interrupted()  # nothing left pending


def test_a_second_ctrl_c_raises_at_once():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            press_ctrl_c()
            press_ctrl_c()
            pytest.fail("the second Ctrl-C did not raise")


def test_a_ctrl_c_after_the_last_batch_is_raised_when_the_block_ends():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            press_ctrl_c()


def test_a_ctrl_c_is_not_lost_where_python_ignores_exceptions():
    """Raised from a __del__, a KeyboardInterrupt is printed and dropped;
    noted by the handler it still stops the block."""

    class Noisy:
        def __del__(self):
            press_ctrl_c()

    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            Noisy()  # the signal arrives inside __del__
            raise_if_interrupted()


def test_the_previous_handler_is_back_afterwards():
    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
