"""Rigs: the emulated networks tests run on (the namespace dumbbell), and their delay emulation.

This package is imported by the config layer (its OmegaConf resolvers) and
run as a process (``python -m antler.rig.delay``), so it imports nothing heavy.
"""
