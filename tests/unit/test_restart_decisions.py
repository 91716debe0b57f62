"""The test node agent's restart decision follows the kubelet: policy, exit code, doubling back-off."""

from __future__ import annotations

import pytest

from harness import nodeagent


@pytest.mark.parametrize(
    ("policy", "code", "restarts", "delay"),
    [("Always", 0, 0, 10.0), ("Always", 3, 1, 20.0), ("Always", 1, 5, 300.0), ("OnFailure", 1, 2, 40.0),
     ("OnFailure", 0, 0, None), ("Never", 1, 0, None), (None, 1, 0, None)],
)
def test_the_restart_delay_follows_the_policy_and_doubles_up_to_the_cap(
        policy: str | None, code: int, restarts: int, delay: float | None) -> None:
    assert nodeagent.restart_delay(policy, code, restarts) == delay
