"""Fixtures of the edge-runtime tests: tiny exports and in-process edge nodes on loopback."""

from __future__ import annotations

import pytest

from tests.edge_runtime.nodes import Client, Node, tiny_exports


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_exports(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def node_factory():
    made = []

    def make(models, **config):
        node = Node(models, **config)
        made.append(node)
        client = Client(node.endpoint)
        made.append(client)
        return node, client

    yield make
    for thing in reversed(made):
        thing.close()
