"""Judging maps: statistics, agreement, deletion/insertion, randomisation, the Methods page's comparison and ranking."""
