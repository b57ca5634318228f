"""The scenarios' fixtures: the shared ones (tests/conftest.py) and Debian's Chromium."""

from tests.browser.conftest import browser  # noqa: F401 - a fixture, found by pytest by name
