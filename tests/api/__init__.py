"""Tests of the HTTP API (wahookd/api/)."""
