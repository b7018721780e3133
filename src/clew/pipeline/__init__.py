"""Processors between the receivers and the store; each compiles to SQL the insert applies."""
