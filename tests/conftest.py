import pytest

from npusim.config import load_config


@pytest.fixture(scope="session")
def cfg910():
    return load_config("910b")


@pytest.fixture(scope="session")
def cfg950():
    return load_config("950")
