"""`fraud_control.rollout.run`: the errors a rollout start gives before it touches a store."""
import pytest
from fraud.settings import Settings
from fraud_control.rollout.run import RolloutStartError, open_store, parse_plan


def test_the_plan_error_names_the_option_the_caller_has():
    assert parse_plan("5,20,50,100", option="plan") == (5, 20, 50, 100)
    with pytest.raises(RolloutStartError, match=r"^plan '5,x,100': 'x' is not a whole number \(e\.g\. plan 5,20,50,100\)$"):
        parse_plan("5,x,100", option="plan")


@pytest.mark.parametrize("target, namespace, message", [
    ("kserve", "", "a namespace is required with target kserve"),
    ("kubeflow", "ns", "target must be 'local' or 'kserve', got 'kubeflow'"),
])
def test_a_target_that_cannot_be_opened_is_one_line(tmp_path, target, namespace, message):
    with pytest.raises(RolloutStartError) as raised:
        open_store(target, namespace=namespace, state_dir=tmp_path, settings=Settings())
    assert str(raised.value) == message
