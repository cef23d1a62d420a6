"""The pre-filter: which articles may skip the network."""

from __future__ import annotations

import pytest

from models.labels import could_be_taiwan_related


@pytest.mark.parametrize(
    "headline",
    [
        "Japan summons Chinese ambassador over consul general's post",
        "Tour operators cancel trips as travel warning hits Japanese resorts",
        "Lithuania recalls its envoy after trade row deepens",
        "Concerts by Japanese artists called off amid diplomatic row",
        "Taiwan reports 30 aircraft near the island",
    ],
)
def test_measures_against_a_third_country_reach_the_model_without_naming_taiwan(headline):
    assert could_be_taiwan_related(headline)


@pytest.mark.parametrize(
    "headline",
    [
        "Sadio Mane penalty secures African Cup of Nations final victory for Senegal",
        "A thousand people were summoned for jury duty in the trial",
        "What do giant veg growers eat on Christmas Day?",
    ],
)
def test_news_without_taiwan_china_or_a_coercive_measure_skips_the_model(headline):
    assert not could_be_taiwan_related(headline)
