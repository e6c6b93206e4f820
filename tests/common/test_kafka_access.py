"""common.kafka_access on metadata answers as the broker gives them (against a broker: tests/test_least_privilege)."""

from __future__ import annotations

import pytest
from aiokafka.errors import MessageSizeTooLargeError, TopicAuthorizationFailedError

from common.kafka_access import (
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC_OR_PARTITION,
    TopicOp,
    parse_access,
    require,
)
from common.kafka_errors import KafkaMisconfigured
from gateway.sender import refusal_reason


def topic(name: str, error_code: int = 0, operations: int | None = None) -> dict[str, object]:
    answer: dict[str, object] = {"topic": name, "error_code": error_code, "partitions": [{}, {}]}
    if operations is not None:
        answer["topic_authorized_operations"] = operations
    return answer


def bits(*ops: TopicOp) -> int:
    return sum(1 << op.value for op in ops)


def test_a_topic_the_principal_may_not_describe_is_not_authorized_never_missing() -> None:
    access = parse_access([topic("t.read", TOPIC_AUTHORIZATION_FAILED), topic("t.missing", UNKNOWN_TOPIC_OR_PARTITION)])
    with pytest.raises(KafkaMisconfigured, match=r"^kafka: not authorized to Read topic t\.read: grant"):
        require(access, {"t.missing": [TopicOp.READ], "t.read": [TopicOp.READ]})
    assert require(access, {"t.missing": [TopicOp.READ]}) == ["t.missing"]


def test_a_hidden_topic_is_named_by_the_operation_needed_describe_when_none_implies_it() -> None:
    access = parse_access([topic("t", TOPIC_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaMisconfigured, match="not authorized to Describe topic t:"):
        require(access, {"t": [TopicOp.DESCRIBE_CONFIGS]})
    with pytest.raises(KafkaMisconfigured, match="not authorized to Delete topic t:"):
        require(access, {"t": [TopicOp.DELETE]})


def test_the_authorized_operations_say_which_is_refused() -> None:
    access = parse_access(
        [topic("a", operations=bits(TopicOp.READ, TopicOp.DESCRIBE)), topic("b", operations=-(2**31))]
    )
    assert access["a"].operations == {TopicOp.READ, TopicOp.DESCRIBE}
    assert access["b"].operations is None  # not computed (an older broker): only Describe is known
    assert access["a"].partitions == 2
    with pytest.raises(KafkaMisconfigured, match="not authorized to Write topic a:"):
        require(access, {"a": [TopicOp.READ, TopicOp.WRITE], "b": [TopicOp.WRITE]})
    assert require(access, {"a": [TopicOp.READ], "b": [TopicOp.DELETE]}) == []


def test_the_gateway_names_a_refused_topic_and_not_a_refused_record() -> None:
    reason = refusal_reason(TopicAuthorizationFailedError(), "pinwheel.account.v1")
    assert reason is not None
    assert reason.startswith("kafka: not authorized to Write topic pinwheel.account.v1: grant")
    assert refusal_reason(MessageSizeTooLargeError(), "pinwheel.account.v1") is None  # the record's own fault
