"""Contracts and plumbing shared by every fraudmesh service: messages, subjects, settings, the service base."""
