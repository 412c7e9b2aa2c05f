"""The embedded lab: a local copy of the system under test, built from real parts."""
