"""The live web page of ``newswatch serve`` (see `web.app`) and ``newswatch status``."""
