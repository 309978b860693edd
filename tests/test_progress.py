"""When progress bars show: never when switched off or under -q, else tqdm decides by the terminal."""

import logging

import pytest

from modalbalance.progress import bar_disable


@pytest.fixture
def package_logger():
    logger = logging.getLogger("modalbalance")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_bar_switched_off(package_logger):
    package_logger.setLevel(logging.INFO)
    assert bar_disable(False) is True


def test_bar_left_to_tqdm_at_info(package_logger):
    package_logger.setLevel(logging.INFO)
    assert bar_disable(True) is None


def test_bar_hidden_when_quiet(package_logger):
    package_logger.setLevel(logging.WARNING)
    assert bar_disable(True) is True
