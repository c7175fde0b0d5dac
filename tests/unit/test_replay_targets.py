"""Replays write only where the operator intends: with a config, a copy may go without `--to`
only to the configured pipeline's own topics (redrive, sources), since the redrive and
`--to-source` targets come from the dead letter's headers."""

from __future__ import annotations

from itertools import repeat

from reprocessor.deadletters import LAZARUS
from reprocessor.replay import Target, TargetMode

OWN = frozenset({"orders-pipeline.redrive", "orders", "payments"})


def test_the_pipelines_own_topics_are_allowed() -> None:
    for mode in (TargetMode.REDRIVE, TargetMode.SOURCE):
        target = Target(mode, None, OWN)
        assert all(target.outside(topic) is None for topic in OWN)


def test_a_topic_named_only_by_headers_is_refused_with_the_way_out() -> None:
    for mode in (TargetMode.REDRIVE, TargetMode.SOURCE):
        reason = Target(mode, None, OWN).outside("payroll.redrive")
        assert reason is not None
        assert "outside the configured pipeline" in reason
        assert "--to payroll.redrive" in reason


def test_to_names_its_target_explicitly_and_no_config_means_no_limit() -> None:
    assert Target(TargetMode.TO, "anything", OWN).outside("anything") is None
    assert Target(TargetMode.REDRIVE, None, None).outside("payroll.redrive") is None


def test_the_oauthbearer_config_is_a_secret() -> None:
    from pipeline.app.settings import DlqSpec, OutputSpec, SchemaSpec, Settings, is_secret_property

    assert is_secret_property("sasl.oauthbearer.config")
    settings = Settings(
        pipeline="p",
        sources={"s": SchemaSpec(format="bytes")},
        output=OutputSpec(topic="o"),
        dlq=DlqSpec(topic="d"),
        kafka={"sasl.oauthbearer.config": "clientId=x clientSecret=hunter2"},
    )
    assert "hunter2" not in repr(settings) + str(settings)
    secret = settings.client_properties("consumer")["sasl.oauthbearer.config"]
    assert isinstance(secret, str) and secret.endswith("hunter2")


def test_the_metrics_endpoint_binds_to_loopback_by_default() -> None:
    from pipeline.app.settings import DlqSpec, OutputSpec, SchemaSpec, Settings

    settings = Settings(
        pipeline="p",
        sources={"s": SchemaSpec(format="bytes")},
        output=OutputSpec(topic="o"),
        dlq=DlqSpec(topic="d"),
    )
    assert settings.metrics_host == "127.0.0.1"


def test_the_targets_of_a_batch_are_each_dead_letters_target() -> None:
    pipelines = ["orders-pipeline", None, "payments", "orders-pipeline"]
    origins = ["orders/0/1", "payments/2/3", None, "not coordinates"]
    sources = ["orders", None, "payments", "orders"]
    for target in (
        Target(TargetMode.TO, "out"),
        Target(TargetMode.REDRIVE),
        Target(TargetMode.SOURCE, None, OWN),
    ):
        expected = list(map(target.topic_of, repeat(LAZARUS), pipelines, origins, sources))
        assert target.topics_of(pipelines, origins, sources) == expected
    assert Target(TargetMode.TO, "out").topics_of(pipelines, origins, sources) == ["out"] * 4
