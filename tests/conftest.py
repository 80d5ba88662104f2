"""Shared pytest configuration: fixture modules are registered as plugins here."""

pytest_plugins = ["tests.fixtures_dicom", "tests.fixtures_models", "tests.fixtures_network", "tests.fixtures_burn", "tests.fixtures_node", "tests.orthanc"]
