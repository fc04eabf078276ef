"""Federations for study and test: the Flower simulation of a consortium in one process, the
adversarial sites it can hold, and a real deployment of SuperLink, SuperNodes and site workers on
127.0.0.1."""
