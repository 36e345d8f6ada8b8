import pytest

from tests.e2e.served_model import activate_served_model


@pytest.fixture
def served_model(transactional_db):
    return activate_served_model()
