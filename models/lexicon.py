"""Word lists shared by the keyword baseline and the model's lexical features.

CAMEO-style actor dictionaries (Taiwan, the PRC, the US, Japan) and one event
dictionary per signal type. `models.baseline` codes events with them and
`models.features` turns their hits into the network's lexical features, so an
edit here changes the trained model's inputs: retrain after one.
"""

from __future__ import annotations

import re

__all__ = ["ACTORS", "EVENTS", "words"]


def words(*patterns: str) -> re.Pattern[str]:
    """One case-insensitive pattern matching any of ``patterns`` at a word start."""
    return re.compile(r"\b(?:" + "|".join(patterns) + r")", re.IGNORECASE)


#: Actor dictionaries (CAMEO-style actor codes).
ACTORS: dict[str, re.Pattern[str]] = {
    "TWN": words(
        r"taiwan",
        r"taipei",
        r"formosa",
        r"kinmen",
        r"matsu\b",
        r"penghu",
        r"tsai ing-wen",
        r"lai ching-te",
        r"william lai",
        r"cross-strait",
        r"hsiao bi-khim",
    ),
    "CHN": words(
        r"china\b",
        r"chinese",
        r"beijing",
        r"\bprc\b",
        r"pla\b",
        r"people's liberation",
        r"xi jinping",
        r"wang yi",
        r"communist party",
        r"ccp\b",
    ),
    "USA": words(
        r"u\.s\.",
        r"us\b",
        r"united states",
        r"washington",
        r"biden",
        r"trump",
        r"pentagon",
        r"congress",
        r"state department",
        r"pelosi",
    ),
    "JPN": words(r"japan", r"tokyo", r"takaichi", r"kishida"),
}

#: Event dictionaries, one per signal type.
EVENTS: dict[str, re.Pattern[str]] = {
    "military": words(
        r"drills?\b",
        r"military exercises?",
        r"war ?games",
        r"live[- ]fire",
        r"incursions?",
        r"air defen[cs]e (?:identification )?zone",
        r"adiz\b",
        r"median line",
        r"warplanes",
        r"fighter jets",
        r"military (?:aircraft|planes|jets)",
        r"warships?",
        r"aircraft carrier",
        r"sorties",
        r"transit(?:s|ed)? (?:the |through the )?(?:taiwan )?strait",
        r"sail(?:s|ed)? through the (?:taiwan )?strait",
        r"missiles? (?:launch|fired|test)",
        r"fires? missiles",
        r"blockade",
        r"encircl",
        r"joint sword",
        r"strait thunder",
        r"simulated (?:strikes|attacks)",
    ),
    "rhetoric": words(
        r"warn(?:s|ed|ing)?\b",
        r"threat(?:en|ens|ened)\b",
        r"playing with fire",
        r"play with fire",
        r"red line",
        r"counter-?measures",
        r"stern",
        r"vow(?:s|ed)?\b",
        r"smash",
        r"crush",
        r"ultimatum",
        r"by force",
        r"prepare for war",
        r"will not tolerate",
        r"resolutely",
        r"burn(?:ed)? themselves",
    ),
    "economic": words(
        r"sanction(?:s|ed|ing)?\b",
        r"import bans?",
        r"export bans?",
        r"bans? (?:on )?imports",
        r"bans? (?:the )?(?:import|export)",
        r"suspend(?:s|ed)? (?:imports|trade)",
        r"halt(?:s|ed)? imports",
        r"tariff",
        r"trade (?:restrictions|barriers?|curbs|probe)",
        r"boycott",
        r"travel advisor",
        r"economic coercion",
    ),
    "diplomatic": words(
        r"summon(?:s|ed)?\b",
        r"recall(?:s|ed)? (?:its |the )?(?:ambassador|envoy)",
        r"sever(?:s|ed)? (?:diplomatic )?ties",
        r"switch(?:es|ed)? (?:diplomatic )?(?:ties|recognition)",
        r"diplomatic (?:ties|recognition|protest|relations)",
        r"(?:formal|lodged?) (?:a )?protests?",
        r"stern representations",
        r"protest(?:s|ed)\b",
        r"deplore",
        r"downgrade",
    ),
    "arms": words(
        r"arms (?:sales?|package|deal)",
        r"weapons? (?:sales?|package|deal|aid)",
        r"military (?:aid|assistance)",
        r"security assistance",
        r"approv(?:es|ed) (?:the )?(?:potential )?sale",
        r"f-16",
        r"javelin",
        r"harpoon",
        r"patriot",
        r"himars",
        r"troops (?:are )?training",
        r"foreign military (?:sales|financing)",
    ),
    "grayzone": words(
        r"coast guard",
        r"maritime militia",
        r"undersea cables?",
        r"cyber ?attacks?",
        r"hack(?:ers|ed|ing)\b",
        r"spy(?:ing)?\b",
        r"espionage",
        r"balloons?",
        r"drones?",
        r"separatists?",
        r"die-hard",
    ),
}
