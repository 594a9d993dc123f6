"""Readers of committed nights: the HTML report, the Lance index of clips."""
