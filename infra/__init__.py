"""AWS CDK v2 app for SkyPACS: one stack composed of one construct per concern.

Only deployment wiring lives here; runtime code stays in ``skypacs/`` (STYLE.md, Chalice trait).
"""
