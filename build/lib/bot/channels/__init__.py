"""Channels turn platform input into `Inbound` and send `Reply`s through platform APIs."""
